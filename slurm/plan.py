"""The rule for what to run: a run is submitted unless it finished or a live job may still train it.

A record alone cannot tell: "pending" or "running" is also what a job that died (killed, out of memory,
node failure) leaves behind. So for those the jobs named by the latest submission manifest are asked
(squeue on SLURM, the process table for local jobs), and the run's lock tells whether some process on
this file system trains it (a run started by hand). A job whose state cannot be learnt counts as alive:
two jobs never train one run at once.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ablations import records
from ablations.grid import Cell

from .manifests import Submission, latest_submissions

NEW, RETRY, RESUBMIT = "new", "failed before", "its job ended without finishing"
FINISHED, ACTIVE, NOT_SELECTED = "finished", "queued or running", "not selected by --runs"


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


def plan(cells: list[Cell], out_dir: Path, runs: Optional[list[str]] = None) -> list[Decision]:
    """One decision per distinct run, in grid order. `runs` restricts submission to those run ids."""
    by_run: dict[str, list[Cell]] = {}
    for cell in cells:
        by_run.setdefault(cell.run_id, []).append(cell)
    if runs:
        unknown = set(runs) - set(by_run)
        if unknown:
            raise ValueError(f"--runs: not cells of these grids: {', '.join(sorted(unknown))}")
    submissions = latest_submissions(out_dir)
    decisions = []
    for run, run_cells in by_run.items():
        if runs and run not in runs:
            decisions.append(Decision(run, run_cells, False, NOT_SELECTED))
            continue
        decisions.append(Decision(run, run_cells, *_decide(run, out_dir, submissions.get(run))))
    return decisions


def _decide(run: str, out_dir: Path, submission: Optional[Submission]) -> tuple[bool, str, str]:
    record = records.read_record(out_dir, run)
    if record is None:
        return True, NEW, ""
    if record.status == records.FINISHED:
        return False, FINISHED, ""
    if record.status == records.FAILED:
        return True, RETRY, ""
    live = live_jobs(submission, out_dir)
    if live:
        return False, ACTIVE, f"job {', '.join(live)}"
    if records.is_claimed(out_dir, run):
        return False, ACTIVE, "a process holds its lock"
    return True, RESUBMIT, f"job {', '.join(submission.job_ids)}" if submission else "no job recorded"


def live_jobs(submission: Optional[Submission], out_dir: Path) -> list[str]:
    """The submission's jobs that are queued or running (or whose state cannot be learnt)."""
    if submission is None:
        return []
    return [job for job in submission.job_ids if job_alive(submission.executor, job, out_dir) is not False]


def job_alive(executor: str, job_id: str, out_dir: Path) -> Optional[bool]:
    """True if the job is queued or running, False if it ended, None if that cannot be learnt."""
    if executor == "debug":  # ran inside its launcher, which has returned
        return False
    if executor == "local":  # the job id is the pid of submitit's controller process
        try:
            command = Path(f"/proc/{int(job_id)}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return False
        return "submitit" in command and str(Path(out_dir).resolve()) in command
    if not shutil.which("squeue"):
        return None
    # squeue lists queued, running, suspended and completing jobs; an ended one is absent or unknown.
    result = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60, env=os.environ
    )
    if result.returncode != 0:
        return False if "Invalid job id" in result.stderr else None
    return bool(result.stdout.strip())
