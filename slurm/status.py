"""Per-run state of a results directory: from the run records, the submission manifests and submitit's logs.

    python -m slurm.status DIR [--log-lines N]

Shows pending / running / finished / failed per run with its progress and metrics; for failed runs, the
error and the tail of the job's log. Resubmit failed cells alone with
``python -m slurm.launch GRID.yaml --out DIR --runs RUN_ID ...`` (or the whole grid: finished cells are skipped).
"""

import argparse
import json
from pathlib import Path
from typing import Optional

from submitit.core.utils import JobPaths

from ablations import records


def job_ids(out_dir: Path) -> dict:
    """run id -> job id of its latest submission."""
    latest = {}
    for manifest in sorted((out_dir / "submissions").glob("*.json")):
        for run in json.loads(manifest.read_text())["runs"]:
            latest[run["run_id"]] = run["job_id"]
    return latest


def log_tail(out_dir: Path, job_id: str, lines: int) -> Optional[str]:
    paths = JobPaths(out_dir / "logs" / "%j", job_id=job_id, task_id=0)
    for log in (paths.stderr, paths.stdout):
        if log.exists() and log.stat().st_size:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return None


def run_records(out_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]


def report(out_dir: Path, log_lines: int = 20) -> str:
    jobs = job_ids(out_dir)
    rows, counts = [], {}
    for record in run_records(out_dir):
        state = record["status"]
        counts[state] = counts.get(state, 0) + 1
        done = len(record.get("epochs") or [])
        planned = record.get("epochs_planned") or record.get("config", {}).get("optim", {}).get("epochs", "?")
        top1 = f"{record['top1']:.2f}%" if isinstance(record.get("top1"), float) else "-"
        job = jobs.get(record["run_id"], "-")
        rows.append(
            f"{record['run_id']}  {state:<9} {record.get('model', '?'):<10} epochs {done}/{planned}  "
            f"top1 {top1:>7}  job {job}  {record.get('grid_values', '')}"
        )
        if state == records.FAILED:
            if record.get("error"):
                rows.append("    error: " + record["error"].strip().splitlines()[-1])
            tail = log_tail(out_dir, job, log_lines) if job != "-" else None
            if tail:
                rows.append("    log tail:\n" + "\n".join("      " + line for line in tail.splitlines()))
    totals = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    return f"{out_dir}: {totals or 'no runs'}\n" + "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="State of every run in a results directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--log-lines", type=int, default=20, help="lines of a failed job's log to show")
    args = parser.parse_args(argv)
    print(report(Path(args.out_dir), args.log_lines))


if __name__ == "__main__":
    main()
