"""Per-run state of a results directory: from the run records, the submission manifests and the jobs.

    python -m slurm.status DIR [--log-lines N]

Shows pending / running / finished / failed per run with its progress, metrics and grid values; a
pending or running run whose jobs have all ended is flagged (relaunching the grid resubmits it). For
failed runs, the error and the tail of the job's log. Resubmit failed cells alone with
``python -m slurm.launch GRID.yaml --out DIR --runs RUN_ID ...`` (or the whole grid: finished cells are skipped).
"""

import argparse
import collections
from pathlib import Path
from typing import Optional

from submitit.core.utils import JobPaths

from ablations import cli, records
from ablations.config import ConfigError

from .manifests import latest_submissions
from .plan import DEAD, JobStateUnknown, run_state


def log_tail(out_dir: Path, job_id: str, lines: int) -> Optional[str]:
    paths = JobPaths(out_dir / "logs" / "%j", job_id=job_id, task_id=0)
    for log in (paths.stderr, paths.stdout):
        if log.exists() and log.stat().st_size:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return None


def report(out_dir: Path, log_lines: int = 20) -> str:
    if not Path(out_dir).is_dir():
        raise ConfigError(f"no results directory {out_dir}")
    submissions = latest_submissions(out_dir)
    found, problems = records.read_records(out_dir)
    rows, counts = [], collections.Counter()
    for record in found:
        counts[record.status] += 1
        submission = submissions.get(record.run_id)
        jobs = ",".join(submission.job_ids or ["?"]) if submission else (record.job_id or "-")
        planned = record.epochs_planned or record.config.get("optim", {}).get("epochs", "?")
        progress = f"iterations {record.iterations}" if record.iterations else f"epochs {len(record.epochs)}/{planned}"
        values = "; ".join(f"{grid or '?'}: {values}" for grid, values in record.grids.items())
        rows.append(
            f"{record.run_id}  {record.status:<9} {record.model or '?':<10} {progress}  "
            f"{record.headline()}  job {jobs}  {values}"
        )
        if record.status in (records.PENDING, records.RUNNING):
            try:
                dead = run_state(out_dir, record.run_id, submission).name == DEAD
            except JobStateUnknown as error:
                rows.append(f"    {error}")
            else:
                if dead:
                    rows.append("    its jobs have ended without finishing it: launching the grid again resubmits it")
        if record.status == records.FAILED:
            if record.error:
                rows.append("    error: " + record.error.strip().splitlines()[-1])
            job = record.job_id or (submission.job_ids[0] if submission and submission.job_ids else None)
            tail = log_tail(out_dir, job, log_lines) if job else None
            if tail:
                rows.append("    log tail:\n" + "\n".join("      " + line for line in tail.splitlines()))
    rows += [f"unreadable: {problem}" for problem in problems]
    totals = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    return f"{out_dir}: {totals or 'no runs'}\n" + "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="State of every run in a results directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--log-lines", type=int, default=20, help="lines of a failed job's log to show")
    args = parser.parse_args(argv)
    print(report(Path(args.out_dir), args.log_lines))


if __name__ == "__main__":
    cli.run(main, "slurm.status")
