"""A run's state, and the rule for what to run: a run is submitted unless it finished or it is live.

A record alone cannot tell whether a run is live: "pending" or "running" is also what a job that died
(killed, out of memory, node failure) leaves behind. So for those the run's lock tells whether some process
on this file system trains it (a run started by hand), and the jobs named by its latest submission manifest
are asked (squeue on SLURM, the process table for local jobs). Where their state cannot be learnt (squeue
missing, failing or not answering) that is an error naming the problem: two jobs never train one run at
once, and ``--force-resubmit`` submits such runs anyway, without asking.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ablations import records
from ablations.config import ConfigError
from ablations.grid import Cell

from .manifests import Submission, latest_submissions

# A run's state.
NEVER_SUBMITTED, FINISHED, FAILED, LIVE, DEAD = "never submitted", "finished", "failed", "live", "dead"
# Why a run is submitted or skipped.
NEW, RETRY, RESUBMIT = "new", "failed before", "its job ended without finishing"
ACTIVE, NOT_SELECTED = "queued or running", "not selected by --runs"
SQUEUE_TIMEOUT_S = 60
FORCE_HINT = "relaunch with --force-resubmit once you know its jobs have ended"


class JobStateUnknown(ConfigError):
    """Whether a run's jobs still live cannot be learnt (squeue missing, failing or not answering)."""


@dataclass
class RunState:
    name: str  # NEVER_SUBMITTED | FINISHED | FAILED | LIVE | DEAD
    detail: str = ""  # e.g. the live jobs, or the dead ones


def run_state(out_dir: Path, run: str, submission: Optional[Submission], ask_jobs: bool = True) -> RunState:
    """The one rule for a run's state (the launcher and slurm.status). JobStateUnknown where its jobs cannot
    be asked; with ask_jobs=False a pending or running run that no process here holds counts as dead."""
    record = records.read_record(out_dir, run)
    if record is None:
        return RunState(NEVER_SUBMITTED)
    if records.is_finished(record):
        return RunState(FINISHED)
    if record.status == records.FAILED:
        return RunState(FAILED)
    if records.is_claimed(out_dir, run):
        return RunState(LIVE, "a process holds its lock")
    if submission is None:
        return RunState(DEAD, "no job recorded")
    if not ask_jobs:
        return RunState(DEAD, "its jobs were not asked (--force-resubmit)")
    live = live_jobs(submission, out_dir)
    if live:
        return RunState(LIVE, f"job {', '.join(live)}")
    jobs = submission.job_ids or ["of an interrupted launch"]
    return RunState(DEAD, f"job {', '.join(jobs)}")


@dataclass
class Decision:
    run_id: str
    cells: list[Cell]  # the cells of every grid that map to this run (same config, same id)
    submit: bool
    reason: str
    detail: str = ""  # e.g. the live job's id

    @property
    def config(self):
        return self.cells[0].config

    @property
    def grids(self) -> dict:
        return {cell.grid: cell.values for cell in self.cells}


_DECISIONS = {
    NEVER_SUBMITTED: (True, NEW),
    FINISHED: (False, FINISHED),
    FAILED: (True, RETRY),
    LIVE: (False, ACTIVE),
    DEAD: (True, RESUBMIT),
}


def plan(cells: list[Cell], out_dir: Path, runs: Optional[list[str]] = None, force: bool = False) -> list[Decision]:
    """One decision per distinct run, in grid order. `runs` restricts submission to those run ids; `force`
    resubmits unfinished runs without asking their jobs."""
    by_run: dict[str, list[Cell]] = {}
    for cell in cells:
        by_run.setdefault(cell.run_id, []).append(cell)
    if runs:
        unknown = set(runs) - set(by_run)
        if unknown:
            raise ConfigError(f"--runs: not cells of these grids: {', '.join(sorted(unknown))}")
    submissions = latest_submissions(out_dir)
    decisions = []
    for run, run_cells in by_run.items():
        if runs and run not in runs:
            decisions.append(Decision(run, run_cells, False, NOT_SELECTED))
            continue
        state = run_state(out_dir, run, submissions.get(run), ask_jobs=not force)
        decisions.append(Decision(run, run_cells, *_DECISIONS[state.name], state.detail))
    return decisions


def live_jobs(submission: Submission, out_dir: Path) -> list[str]:
    """The submission's jobs that are queued or running. Those of an intent (a launcher killed while
    submitting: no job ids) are looked for among every job submitted from out_dir."""
    if submission.executor == "debug":  # ran inside its launcher, which has returned
        return []
    if submission.job_ids is None:
        find = _local_jobs_of if submission.executor == "local" else _slurm_jobs_of
        return find(Path(out_dir))
    if submission.executor == "local":
        return [job for job in submission.job_ids if _local_job_alive(job, Path(out_dir))]
    return [job for job in submission.job_ids if _squeue("-j", job, "-o", "%T")]


def _local_job_alive(job_id: str, out_dir: Path) -> bool:
    """A local job's id is the pid of submitit's controller process, whose command names its log folder."""
    try:
        command = Path(f"/proc/{int(job_id)}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return False
    return "submitit" in command and str(out_dir.resolve()) in command


def _local_jobs_of(out_dir: Path) -> list[str]:
    return [pid.name for pid in Path("/proc").iterdir() if pid.name.isdigit() and _local_job_alive(pid.name, out_dir)]


def _slurm_jobs_of(out_dir: Path) -> list[str]:
    """This user's queued or running jobs whose batch script submitit wrote under out_dir/logs."""
    logs = str(out_dir.resolve() / "logs") + os.sep
    lines = _squeue("--me", "-o", "%i|%o")
    return [job for job, _, script in (line.partition("|") for line in lines) if script.startswith(logs)]


def _squeue(*arguments: str) -> list[str]:
    """squeue's lines (queued, running, suspended and completing jobs); JobStateUnknown if it cannot answer."""
    if not shutil.which("squeue"):
        raise JobStateUnknown(f"squeue not found: cannot tell whether the runs' SLURM jobs still live; {FORCE_HINT}")
    try:
        result = subprocess.run(
            ["squeue", "-h", *arguments], capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S, env=os.environ
        )
    except subprocess.TimeoutExpired:
        raise JobStateUnknown(
            f"squeue did not answer within {SQUEUE_TIMEOUT_S} s: cannot tell whether the runs' SLURM jobs still "
            f"live; try again later, or {FORCE_HINT}"
        ) from None
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # every job asked for has ended and left squeue's memory
            return []
        error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise JobStateUnknown(f"squeue failed ({error}): cannot tell whether the runs' SLURM jobs still live")
    return result.stdout.split()
