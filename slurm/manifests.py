"""Submission manifests: what each launch submitted, in DIR/submissions/<time>-<grids>-<job>.json.

A manifest names the grids, the overrides, the executor and its parameters, and for every run its grid
values and the jobs that may train it. The launcher asks those jobs whether they still live before it
submits a run again (slurm.plan), and slurm.status shows them.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ablations import records


@dataclass
class Submission:
    executor: str  # local | slurm | debug
    job_ids: list[str]  # the jobs that may train the run (local: every worker of the launch)


def write(out_dir: Path, grids: list, overrides: list, executor: str, parameters: dict, runs: list[dict]) -> Path:
    """runs: {"run_id", "grids" (name -> values), "job_ids"} for every submitted run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    manifest = {
        "grids": [str(Path(grid.path).resolve()) for grid in grids],
        "overrides": list(overrides),
        "executor": executor,
        "submitted": stamp,
        "parameters": parameters,
        "runs": runs,
    }
    names = "+".join(grid.name for grid in grids)
    path = out_dir / "submissions" / f"{stamp}-{names}-{runs[0]['job_ids'][0].replace('/', '_')}.json"
    records.atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return path


def latest_submissions(out_dir: Path) -> dict[str, Submission]:
    """run id -> its latest submission."""
    latest = {}
    for path in sorted((Path(out_dir) / "submissions").glob("*.json")):
        manifest = json.loads(path.read_text())
        for run in manifest["runs"]:
            job_ids = run.get("job_ids") or [run["job_id"]]  # manifests before several jobs per run
            latest[run["run_id"]] = Submission(manifest["executor"], job_ids)
    return latest
