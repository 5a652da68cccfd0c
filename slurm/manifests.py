"""Submission manifests: what each launch submitted, in DIR/submissions/<time>-<grids>.json.

A manifest names the grids, the overrides, the executor and its parameters, and for every run its grid
values and the jobs that may train it. It is written twice: before anything is submitted (the intent: run
ids, no job ids yet), then with the job ids once the executor has returned them. A launcher killed in
between leaves an intent, whose jobs slurm.plan then looks for among the jobs submitted from DIR. The
launcher asks the jobs whether they still live before it submits a run again, and slurm.status shows them.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ablations import records


@dataclass
class Submission:
    executor: str  # local | slurm | debug
    job_ids: Optional[list[str]]  # the jobs that may train the run (local: every worker); None: not yet known
    path: Path  # the manifest


def write_intent(out_dir: Path, grids: list, overrides: list, executor: str, parameters: dict, runs: list) -> Path:
    """runs: {"run_id", "grids" (name -> values)} for every run about to be submitted; their job ids are null."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    manifest = {
        "grids": [str(Path(grid.path).resolve()) for grid in grids],
        "overrides": list(overrides),
        "executor": executor,
        "submitted": stamp,
        "parameters": parameters,
        "runs": [{**run, "job_ids": None} for run in runs],
    }
    names = "+".join(grid.name for grid in grids)
    # Launches into one directory are serialised (slurm.launch's lock): the microseconds keep names apart.
    path = out_dir / "submissions" / f"{stamp}.{time.time_ns() // 1000 % 1_000_000:06d}-{names}.json"
    _write(path, manifest)
    return path


def record_jobs(path: Path, job_ids: list[list[str]]) -> None:
    """Fill in the job ids of every run of an intent, in its order."""
    manifest = json.loads(path.read_text())
    for run, ids in zip(manifest["runs"], job_ids, strict=True):
        run["job_ids"] = ids
    _write(path, manifest)


def withdraw(path: Path) -> None:
    """Remove an intent whose submission failed: nothing of it was queued."""
    path.unlink(missing_ok=True)


def _write(path: Path, manifest: dict) -> None:
    records.atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def latest_submissions(out_dir: Path) -> dict[str, Submission]:
    """run id -> its latest submission."""
    latest = {}
    for path in sorted((Path(out_dir) / "submissions").glob("*.json")):
        manifest = json.loads(path.read_text())
        for run in manifest["runs"]:
            job_ids = run["job_ids"] if "job_ids" in run else [run["job_id"]]  # manifests before several jobs
            latest[run["run_id"]] = Submission(manifest["executor"], job_ids, path)
    return latest
