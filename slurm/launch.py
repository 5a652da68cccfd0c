"""Launch a grid: expand it, skip finished cells, submit the rest through submitit, wait, summarise.

    python -m slurm.launch GRID.yaml --out DIR [key=value ...] --executor {local,slurm,debug}
        [--partition P --gpus-per-node N --nodes M --time MIN --array-parallelism K ...] [--dry-run] [--no-wait]

- local (default): one subprocess per run on this machine, at most --parallel at a time;
  debug: in this process, one after the other; slurm: one job array (--array-parallelism at a time).
- Every cell's record is written under DIR before submission (status "pending"); the runs update it.
  Cells whose record says finished are skipped; failed ones are submitted again (``--runs ID ...`` picks
  cells by run id, including ones recorded as running).
- A submission manifest (grid, run ids, job ids, executor parameters) goes to DIR/submissions/.
- Waits by default (``--no-wait`` returns after submission), then prints a summary and exits non-zero if
  any run failed. ``python -m slurm.status DIR`` shows the state of every run at any time.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

import submitit
from tqdm import tqdm

from ablations import records
from ablations.config import to_dict
from ablations.grid import Cell, expand, load_grid, status

from .job import TrainingJob

POLL_SECONDS = 2.0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Launch a grid of training runs with submitit.")
    parser.add_argument("grid", help="grid YAML, e.g. ablations/grids/smoke.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value for every cell, e.g. data.root=/data/imagenet")
    parser.add_argument("--out", help="results directory (default: results/<grid name>)")
    parser.add_argument("--runs", nargs="+", help="only these run ids (also when their record says running)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be submitted; submit nothing")
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
    cluster.add_argument("--time", type=int, default=60, help="time limit per job, minutes")
    cluster.add_argument("--array-parallelism", type=int, default=64, help="array tasks running at a time")
    cluster.add_argument("--max-requeues", type=int, default=10, help="preemptions/time-outs before giving up")


def make_executor(args, log_dir: Path) -> tuple[submitit.AutoExecutor, dict]:
    """The executor and the parameters it was given (for the manifest)."""
    requeues = {"slurm_max_num_timeout": args.max_requeues} if args.executor == "slurm" else {}
    executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster=args.executor, **requeues)
    parameters = {
        "name": args.name,
        "timeout_min": args.time,
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


def select(cells: list[Cell], out_dir: Path, runs: Optional[list[str]]) -> list[Cell]:
    if runs:
        unknown = set(runs) - {cell.run_id for cell in cells}
        if unknown:
            raise SystemExit(f"--runs: not cells of this grid: {', '.join(sorted(unknown))}")
        return [cell for cell in cells if cell.run_id in runs and status(cell, out_dir) != records.FINISHED]
    return [cell for cell in cells if status(cell, out_dir) not in (records.FINISHED, records.RUNNING)]


def write_pending(cell: Cell, out_dir: Path) -> None:
    records.write_record(
        out_dir,
        {
            "run_id": cell.run_id,
            "status": records.PENDING,
            "model": cell.config.model.name,
            "grid_values": cell.values,
            "config": to_dict(cell.config),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def submit(executor, cells: list[Cell], out_dir: Path, parallel: int, wait: bool) -> list:
    """Submit the cells: a job array on SLURM; locally, keep at most `parallel` running when waiting."""
    jobs_of = [TrainingJob(cell.config, str(out_dir)) for cell in cells]
    if executor.cluster == "local" and wait and parallel < len(cells):
        return _submit_throttled(executor, jobs_of, parallel)
    with executor.batch():
        jobs = [executor.submit(job) for job in jobs_of]
    return jobs


def _submit_throttled(executor, callables, parallel: int) -> list:
    jobs, queue = [], list(callables)
    while queue:
        if sum(not job.done() for job in jobs) < parallel:
            jobs.append(executor.submit(queue.pop(0)))
        else:
            time.sleep(POLL_SECONDS / 4)
    return jobs


def write_manifest(out_dir: Path, grid, args, parameters: dict, cells: list[Cell], jobs: list) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    manifest = {
        "grid": str(Path(grid.path).resolve()),
        "grid_name": grid.name,
        "overrides": args.overrides,
        "executor": args.executor,
        "submitted": stamp,
        "parameters": parameters,
        "runs": [
            {"run_id": cell.run_id, "job_id": job.job_id, "values": cell.values} for cell, job in zip(cells, jobs)
        ],
    }
    path = out_dir / "submissions" / f"{stamp}-{grid.name}-{jobs[0].job_id.replace('/', '_')}.json"
    records.atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return path


def wait_for(jobs: list, cells: list[Cell], out_dir: Path, timeout_min: Optional[float]) -> bool:
    """Poll until every job is done (True) or the timeout passes (False), with a progress bar."""
    deadline = time.monotonic() + 60 * timeout_min if timeout_min else float("inf")
    with tqdm(total=len(jobs), desc="runs done", unit="run") as bar:
        while True:
            done = sum(job.done() for job in jobs)
            bar.update(done - bar.n)
            finished = sum(status(cell, out_dir) == records.FINISHED for cell in cells)
            bar.set_postfix(finished=finished, failed=done - finished if done > finished else 0, refresh=False)
            if done == len(jobs):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)


def settle(jobs: list, cells: list[Cell], out_dir: Path) -> None:
    """A job that ended without finishing its run (crash, OOM, kill) leaves a record saying running or
    pending: mark it failed, naming the job and its state."""
    for job, cell in zip(jobs, cells):
        record = records.read_record(out_dir, cell.run_id) or {"run_id": cell.run_id}
        if not job.done() or record.get("status") in (records.FINISHED, records.FAILED):
            continue
        error = _job_error(job)
        records.write_record(
            out_dir,
            {
                **record,
                "status": records.FAILED,
                "job_id": job.job_id,
                "error": f"job {job.job_id} ended ({job.state}) without finishing the run"
                + (f": {error}" if error else ""),
            },
        )


def _job_error(job) -> Optional[str]:
    """The last line of the job's traceback, or submitit's word on why there is none."""
    try:
        exception = job.exception()
    except Exception as error:  # the job left no result at all (killed): submitit says why
        exception = error
    if exception is None:
        return None
    # submitit frames the traceback (or, with no result, the job's stderr) with dashed lines.
    parts = re.split(r"\n-{10,}\n", str(exception))
    lines = [line for line in parts[min(1, len(parts) - 1)].splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exception).__name__


def summary(cells: list[Cell], out_dir: Path) -> tuple[str, int]:
    lines, failed = [], 0
    for cell in cells:
        record = records.read_record(out_dir, cell.run_id) or {}
        state = record.get("status", "new")
        failed += state == records.FAILED
        top1 = f"{record['top1']:.2f}%" if isinstance(record.get("top1"), float) else "-"
        lines.append(f"  {cell.run_id}  {state:<9} top1 {top1:>7}  {cell.values}")
    return "\n".join(lines), failed


def main(argv=None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)
    grid = load_grid(args.grid)
    out_dir = Path(args.out or Path("results") / grid.name).resolve()
    args.name = grid.name
    cells = expand(grid, args.overrides)
    todo = select(cells, out_dir, args.runs)
    print(
        f"{grid.name}: {len(cells)} cells, {len(cells) - len(todo)} skipped (finished or running), "
        f"{len(todo)} to submit with the {args.executor} executor; results in {out_dir}"
    )
    if args.dry_run or not todo:
        for cell in todo:
            print(f"  {cell.run_id}  {cell.values}")
        return 0
    for cell in todo:
        write_pending(cell, out_dir)
    executor, parameters = make_executor(args, out_dir / "logs")
    jobs = submit(executor, todo, out_dir, args.parallel, wait=not args.no_wait)
    manifest = write_manifest(out_dir, grid, args, parameters, todo, jobs)
    print(f"submitted {len(jobs)} jobs ({jobs[0].job_id} ...); manifest {manifest}")
    if args.no_wait:
        return 0
    complete = wait_for(jobs, todo, out_dir, args.wait_timeout)
    settle(jobs, todo, out_dir)
    table, failed = summary(cells, out_dir)
    print(table)
    if not complete:
        print(f"gave up waiting after {args.wait_timeout} min; the jobs go on: python -m slurm.status {out_dir}")
        return 1
    if failed:
        print(f"{failed} run(s) failed: python -m slurm.status {out_dir} shows their logs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
