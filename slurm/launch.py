"""Launch grids: expand them, decide what to run, submit it through submitit, wait, summarise.

    python -m slurm.launch GRID.yaml [GRID.yaml ...] --out DIR [key=value ...] --executor {local,slurm,debug}
        [--partition P --gpus-per-node N --nodes M --time MIN --array-parallelism K ...] [--dry-run] [--no-wait]
        [--force-resubmit]

- local (default): at most --parallel runs train at once on this machine, in worker processes that outlive
  the launcher (so --no-wait keeps the limit); debug: in this process, one after the other; slurm: one job
  array (--array-parallelism at a time).
- Cells of several grids with the same config are one run (same id), trained once.
- One launch at a time per results directory (a second one waits until the first has submitted).
- What runs is decided by slurm.plan: not finished runs, and never one that a live job may still train.
- Before anything is submitted, a manifest of the intent (grids, run ids, executor parameters) goes to
  DIR/submissions/ and every run's record to DIR (status "pending", with its grid values); the job ids are
  added once submitted. If the executor refuses the jobs (sbatch's error), both are undone.
- Waits by default (``--no-wait`` returns after submission), then prints a summary and exits non-zero if
  any run failed. ``python -m slurm.status DIR`` shows the state of every run at any time.
"""

import argparse
import collections
import contextlib
import fcntl
import io
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import submitit
from submitit.core.utils import FailedJobError
from tqdm import tqdm

from ablations import cli, records
from ablations.config import ConfigError, to_dict
from ablations.detection import DetectionConfig, model_name
from ablations.grid import expand, load_grid

from . import manifests
from .job import TrainingJob
from .plan import DEAD, Decision, JobStateUnknown, plan, run_state

POLL_SECONDS = 2.0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Launch grids of training runs with submitit.")
    parser.add_argument(
        "specs", nargs="+", metavar="GRID.yaml | key=value", help="grid files, then overrides for every cell"
    )
    parser.add_argument("--out", help="results directory (default: results/<grid name>, with one grid)")
    parser.add_argument("--runs", nargs="+", help="only these run ids")
    parser.add_argument("--dry-run", action="store_true", help="list what would be submitted; submit nothing")
    parser.add_argument(
        "--force-resubmit",
        action="store_true",
        help="submit every unfinished run without asking whether its jobs still live (when squeue cannot tell; "
        "check with squeue first): only a run a process here holds is left alone",
    )
    parser.add_argument("--no-wait", action="store_true", help="return right after submission")
    parser.add_argument("--wait-timeout", type=float, help="give up waiting after this many minutes")
    parser.add_argument("--parallel", type=int, default=1, help="local executor: runs at a time")
    add_executor_arguments(parser)
    return parser


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor and the SLURM options (also used by slurm.detectron2_launch)."""
    parser.add_argument("--executor", choices=["local", "slurm", "debug"], default="local")
    cluster = parser.add_argument_group("SLURM")
    cluster.add_argument("--partition")
    cluster.add_argument("--account")
    cluster.add_argument("--qos")
    cluster.add_argument("--constraint")
    cluster.add_argument("--nodes", type=int, default=1)
    cluster.add_argument("--gpus-per-node", type=int, default=0)
    cluster.add_argument("--tasks-per-node", type=int, help="training processes per node (default: one per GPU, or 1)")
    cluster.add_argument("--cpus-per-task", type=int, default=2)
    cluster.add_argument("--mem-gb", type=int, help="memory per node")
    cluster.add_argument("--time", type=int, default=60, help="time limit per run, minutes")
    cluster.add_argument("--array-parallelism", type=int, default=64, help="array tasks running at a time")
    cluster.add_argument("--max-requeues", type=int, default=10, help="preemptions/time-outs before giving up")


def make_executor(args, log_dir: Path, runs_per_job: int = 1) -> tuple[submitit.AutoExecutor, dict]:
    """The executor and the parameters it was given (for the manifest); its time limit covers
    `runs_per_job` runs of --time minutes."""
    requeues = {"slurm_max_num_timeout": args.max_requeues} if args.executor == "slurm" else {}
    executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster=args.executor, **requeues)
    parameters = {
        "name": args.name,
        "timeout_min": args.time * runs_per_job,
        "nodes": args.nodes,
        "tasks_per_node": args.tasks_per_node or max(1, args.gpus_per_node),
        "cpus_per_task": args.cpus_per_task,
        "gpus_per_node": args.gpus_per_node or None,
        "mem_gb": args.mem_gb,
    }
    if args.executor == "slurm":
        extra = {
            key: value
            for key, value in (("account", args.account), ("qos", args.qos), ("constraint", args.constraint))
            if value
        }
        parameters.update(
            slurm_partition=args.partition,
            slurm_array_parallelism=args.array_parallelism,
            slurm_additional_parameters=extra,
        )
    executor.update_parameters(**parameters)
    return executor, {**parameters, **requeues}


class SubmissionFailed(ConfigError):
    """The executor refused the jobs (sbatch's error: a partition that does not exist, a bad account)."""


@contextlib.contextmanager
def launch_lock(out_dir: Path) -> Iterator[None]:
    """One launch at a time per results directory, from planning until its jobs and manifest are recorded (not
    while it waits for them): a second launch waits, saying who holds the lock, then plans from what the first
    submitted. An advisory flock on DIR/submissions/launch.lock, released by the kernel if the launcher dies."""
    path = out_dir / "submissions" / "launch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another launch"
            print(f"waiting for the launch of {holder} into {out_dir} to finish submitting", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(f"host {platform.node()}, pid {os.getpid()}, since {time.strftime('%H:%M:%S')}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def decide(cells: list, out_dir: Path, args) -> list[Decision]:
    """slurm.plan's decisions, printed: what is submitted, and why the rest is not."""
    try:
        decisions = plan(cells, out_dir, args.runs, force=args.force_resubmit)
    except records.RecordError as error:  # a broken record of one of the launch's own runs
        raise ConfigError(str(error)) from error
    print(
        f"{args.name}: {len(cells)} cells, {len(decisions)} runs: {describe(decisions)}; "
        f"{args.executor} executor, results in {out_dir}"
    )
    for decision in decisions:
        if decision.detail and (args.dry_run or not decision.submit):
            print(f"  {decision.run_id}  {decision.reason} ({decision.detail})")
    return decisions


def write_pending(decision: Decision, out_dir: Path) -> None:
    """The run's record before submission: pending, with its grid values (kept by every later rewrite)."""
    previous = records.read_record(out_dir, decision.run_id)
    grids = {**(previous.grids if previous else {}), **decision.grids}
    config = decision.config
    model = model_name(config.detectron2) if isinstance(config, DetectionConfig) else config.model.name
    record = records.RunRecord(decision.run_id, records.PENDING, to_dict(config), grids, model=model)
    records.write_record(out_dir, record)


def submit_runs(args, grids: list, overrides: list, todo: list[Decision], out_dir: Path) -> tuple[list[list], Path]:
    """Record the intent (manifest without job ids) and the pending records, submit, then record the job ids.
    If the executor refuses the jobs, nothing is left behind: SubmissionFailed naming its error."""
    workers = min(args.parallel, len(todo)) if args.executor == "local" else 1
    runs_per_job = math.ceil(len(todo) / workers) if args.executor == "local" else 1
    executor, parameters = make_executor(args, out_dir / "logs", runs_per_job)
    runs = [{"run_id": d.run_id, "grids": d.grids} for d in todo]
    manifest = manifests.write_intent(out_dir, grids, overrides, args.executor, parameters, runs)
    previous = {d.run_id: records.read_record(out_dir, d.run_id) for d in todo}
    for decision in todo:
        write_pending(decision, out_dir)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: said below, in one line
            jobs_of = submit(executor, todo, out_dir, workers)
    except (FailedJobError, OSError) as error:
        for run, record in previous.items():
            if record is None:
                records.record_path(out_dir, run).unlink(missing_ok=True)
            else:
                records.write_record(out_dir, record)
        manifests.withdraw(manifest)
        command = "sbatch" if args.executor == "slurm" else "submission"
        lines = [re.sub(r"^sbatch: error: ", "", line.strip()) for line in str(error).splitlines() if line.strip()]
        said = "; ".join(lines) or type(error).__name__
        raise SubmissionFailed(f"{command} failed: {said}; nothing was submitted") from error
    manifests.record_jobs(manifest, [[job.job_id for job in jobs] for jobs in jobs_of])
    return jobs_of, manifest


def submit(executor, decisions: list[Decision], out_dir: Path, workers: int) -> list[list]:
    """Submit the runs; returns, for each run, the jobs that may train it. A job array on SLURM; locally,
    `workers` jobs that share the whole list."""
    configs = [decision.config for decision in decisions]
    if executor.cluster == "local":
        jobs = [executor.submit(TrainingJob(configs, str(out_dir))) for _ in range(workers)]
        return [jobs] * len(decisions)
    with executor.batch():
        jobs = [executor.submit(TrainingJob([config], str(out_dir))) for config in configs]
    return [[job] for job in jobs]


def wait_for(jobs: list, decisions: list[Decision], out_dir: Path, timeout_min: Optional[float]) -> bool:
    """Poll until every job is done (True) or the timeout passes (False), with a progress bar of the runs'
    epochs."""
    deadline = time.monotonic() + 60 * timeout_min if timeout_min else float("inf")
    planned = [1 if isinstance(d.config, DetectionConfig) else d.config.optim.epochs for d in decisions]
    total = sum(planned)
    # Not on a terminal (CI, a job log), a line every 30 s rather than a redraw every poll.
    interval = 1 if sys.stderr.isatty() else 30
    with tqdm(total=total, desc=f"{len(decisions)} runs", unit="epoch", mininterval=interval) as bar:
        while True:
            found = [records.read_record(out_dir, d.run_id) for d in decisions]
            states = collections.Counter(r.status if r else "new" for r in found)
            # A failed run trains no more: its epochs count as done (a detection run counts once it has ended).
            done = sum(
                epochs if r and r.status in (records.FAILED, records.FINISHED) else len(r.epochs) if r else 0
                for epochs, r in zip(planned, found)
            )
            bar.update(done - bar.n)
            bar.set_postfix(
                running=states[records.RUNNING],
                finished=states[records.FINISHED],
                failed=states[records.FAILED],
                refresh=False,
            )
            if all(job.done() for job in jobs):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)


def _record_status(run: str, out_dir: Path) -> str:
    record = records.read_record(out_dir, run)
    return record.status if record else "new"


def settle(decisions: list[Decision], jobs_of: list[list], out_dir: Path, manifest: Path) -> None:
    """A run whose jobs all ended without finishing it (crash, out of memory, kill) is left pending or
    running: mark it failed, naming the jobs and why they ended; unless it is live elsewhere (another process
    holds it, or a later launch's jobs may train it)."""
    submissions = manifests.latest_submissions(out_dir)
    for decision, jobs in zip(decisions, jobs_of):
        if not all(job.done() for job in jobs):
            continue
        later = submissions.get(decision.run_id)
        try:
            state = run_state(out_dir, decision.run_id, later if later and later.path != manifest else None)
        except JobStateUnknown:  # a later launch's jobs, which cannot be asked: leave the run to them
            continue
        if state.name != DEAD:
            continue
        record = records.read_record(out_dir, decision.run_id)
        reasons = "; ".join(f"job {job.job_id} ({job.state})" + _job_error(job) for job in jobs)
        record.status = records.FAILED
        record.error = f"ended without finishing the run: {reasons}"
        records.write_record(out_dir, record)


def _job_error(job) -> str:
    """': ' and the last line of the job's traceback, or submitit's word on why there is none."""
    try:
        exception = job.exception()
    except Exception as error:  # the job left no result at all (killed): submitit says why
        exception = error
    if exception is None:
        return ""
    # submitit frames the traceback (or, with no result, the job's stderr) with dashed lines.
    parts = re.split(r"\n-{10,}\n", str(exception))
    lines = [line for line in parts[min(1, len(parts) - 1)].splitlines() if line.strip()]
    return ": " + (lines[-1].strip() if lines else type(exception).__name__)


def summary(decisions: list[Decision], out_dir: Path) -> str:
    lines = []
    for decision in decisions:
        record = records.read_record(out_dir, decision.run_id)
        state = record.status if record else "new"
        lines.append(f"  {decision.run_id}  {state:<9} {record.headline() if record else '-'}  {_values(decision)}")
    return "\n".join(lines)


def _values(decision: Decision) -> str:
    """e.g. 'operator: model=rednet26 seed=0; kernel_size: kernel_size=3 seed=0'."""
    return "; ".join(
        f"{grid}: "
        + " ".join(
            f"{axis.split('.')[-1]}={value.get('name', '...') if isinstance(value, dict) else value}"
            for axis, value in values.items()
        )
        for grid, values in decision.grids.items()
    )


def describe(decisions: list[Decision]) -> str:
    """e.g. '3 to submit (2 new, 1 failed before), 1 finished, 2 not selected by --runs'."""
    submit = collections.Counter(d.reason for d in decisions if d.submit)
    skip = collections.Counter(d.reason for d in decisions if not d.submit)
    parts = [f"{sum(submit.values())} to submit" + (f" ({_counts(submit)})" if submit else "")]
    return ", ".join(parts + ([_counts(skip)] if skip else []))


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in counter.items())


def main(argv=None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)
    grid_paths = [spec for spec in args.specs if "=" not in spec]
    overrides = [spec for spec in args.specs if "=" in spec]
    if not grid_paths:
        raise ConfigError("no grid file given")
    grids = [load_grid(path) for path in grid_paths]
    if args.out is None and len(grids) > 1:
        raise ConfigError("--out is needed with several grids")
    if args.parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {args.parallel}")
    out_dir = Path(args.out or Path("results") / grids[0].name).resolve()
    args.name = "+".join(grid.name for grid in grids)
    cells = [cell for grid in grids for cell in expand(grid, overrides)]
    if args.dry_run:
        decisions = decide(cells, out_dir, args)
        for decision in decisions:
            if decision.submit:
                print(f"  {decision.run_id}  would submit ({decision.reason})  {_values(decision)}")
        return 0
    with launch_lock(out_dir):
        decisions = decide(cells, out_dir, args)
        # Finished and live runs join the launch's grids too, not only the ones submitted.
        records.add_memberships(out_dir, {d.run_id: d.grids for d in decisions})
        todo = [d for d in decisions if d.submit]
        if not todo:
            return 0
        jobs_of, manifest = submit_runs(args, grids, overrides, todo, out_dir)
    jobs = list({job.job_id: job for jobs in jobs_of for job in jobs}.values())
    print(f"submitted {len(todo)} runs in {len(jobs)} jobs ({jobs[0].job_id} ...); manifest {manifest}")
    if args.no_wait:
        print(f"not waiting; python -m slurm.status {out_dir} shows their progress")
        return 0
    complete = wait_for(jobs, todo, out_dir, args.wait_timeout)
    settle(todo, jobs_of, out_dir, manifest)
    print(summary(decisions, out_dir))
    ends = collections.Counter(_record_status(d.run_id, out_dir) for d in todo)
    if not complete:
        print(f"gave up waiting after {args.wait_timeout} min; the jobs go on: python -m slurm.status {out_dir}")
        return 1
    if ends[records.PENDING] + ends[records.RUNNING]:
        print(f"{ends[records.PENDING] + ends[records.RUNNING]} run(s) are trained by another job or launch")
    if ends[records.FAILED]:
        print(f"{ends[records.FAILED]} run(s) failed: python -m slurm.status {out_dir} shows their logs")
    return 1 if ends[records.FAILED] else 0


if __name__ == "__main__":
    cli.run(main, "slurm.launch")
