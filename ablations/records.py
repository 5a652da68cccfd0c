"""Run records: one JSON file per run, named by the run id, always replaced atomically.

A run killed at any point leaves either its previous record or its new one, never a half-written file,
so concurrent jobs can share one results directory.
"""

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import torch

PENDING, RUNNING, FINISHED, FAILED = "pending", "running", "finished", "failed"


def run_id(resolved_config: dict) -> str:
    """Stable id of a run: a hash of its resolved configuration."""
    canonical = json.dumps(resolved_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def record_path(out_dir, run: str) -> Path:
    return Path(out_dir) / f"{run}.json"


def checkpoint_dir(out_dir, run: str) -> Path:
    return Path(out_dir) / run


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """write(file) into a temporary file in the same folder, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared cluster group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(out_dir, record: dict) -> Path:
    path = record_path(out_dir, record["run_id"])
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def read_record(out_dir, run: str) -> Optional[dict]:
    path = record_path(out_dir, run)
    return json.loads(path.read_text()) if path.exists() else None


def git_commit() -> Optional[str]:
    """The repository's commit, with "-dirty" when there are uncommitted changes; None outside a clone."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def hardware(device: torch.device, world_size: int) -> dict:
    info = {
        "device": str(device),
        "processes": world_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
