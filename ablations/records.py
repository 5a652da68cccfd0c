"""Run records: the one schema of a run's result file, its id, atomic writes, and the run's lock.

A run's record is DIR/<run_id>.json, always replaced atomically: a run killed at any point leaves either
its previous record or its new one, never a half-written file, so concurrent jobs can share one results
directory. Every writer (the launcher, the training run, the launcher marking a dead job failed) goes
through ``RunRecord``, which keeps the grid values and job id through every rewrite.
"""

import copy
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

import torch

PENDING, RUNNING, FINISHED, FAILED = "pending", "running", "finished", "failed"
STATUSES = (PENDING, RUNNING, FINISHED, FAILED)
# 1: before grid membership and job ids were kept (flat "grid_values", ids hashed every config key).
# 2: "grids" (grid name -> axis values) and "job_id" kept through rewrites; ids leave out NON_RESULT_KEYS.
SCHEMA_VERSION = 2
# Config keys that do not change a run's result, left out of its id: moving the dataset, or changing the
# loader workers or CPU threads, does not re-run a finished grid.
NON_RESULT_KEYS = ("data.root", "data.num_workers", "train.threads")


class RecordError(ValueError):
    """A record file that cannot be read (truncated, not JSON, not a run record); the message names it."""


class RunBusy(RuntimeError):
    """Another process holds the run: two jobs never train one run at once."""


def result_config(resolved_config: dict) -> dict:
    """The resolved config without NON_RESULT_KEYS: what a run's result depends on."""
    config = copy.deepcopy(resolved_config)
    for key in NON_RESULT_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return config


def run_id(resolved_config: dict) -> str:
    """Stable id of a run: a hash of the config keys that change its result."""
    canonical = json.dumps(result_config(resolved_config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


@dataclass
class RunRecord:
    run_id: str
    status: str
    config: dict
    grids: dict = field(default_factory=dict)  # grid name -> this run's axis values in that grid
    job_id: Optional[str] = None  # the submitit job that last trained it
    model: Optional[str] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    flops_convention: Optional[str] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    train_loss: Optional[float] = None
    epochs: list = field(default_factory=list)  # per-epoch metrics
    epochs_planned: Optional[int] = None
    images_per_s: Optional[float] = None  # training throughput, mean over epochs
    peak_memory_mib: Optional[float] = None
    wall_time_s: Optional[float] = None
    git_commit: Optional[str] = None
    hardware: dict = field(default_factory=dict)
    error: Optional[str] = None
    updated: Optional[str] = None
    version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict, source: str = "record") -> "RunRecord":
        if not isinstance(data, dict) or not {"run_id", "status"} <= set(data):
            raise RecordError(f"{source}: not a run record (no run_id/status)")
        version = data.get("version", 1)
        if version > SCHEMA_VERSION:
            raise RecordError(f"{source}: record schema {version} is newer than this code's {SCHEMA_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if version == 1 and data.get("grid_values"):
            values["grids"] = {"": data["grid_values"]}  # v1 did not name the grid
        values.setdefault("config", {})
        values["version"] = version
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def write_record(out_dir, record: RunRecord) -> Path:
    record.updated = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = record_path(out_dir, record.run_id)
    text = json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def load_record(path: Path) -> RunRecord:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: unreadable record ({error})") from error
    return RunRecord.from_dict(data, str(path))


def read_record(out_dir, run: str) -> Optional[RunRecord]:
    path = record_path(out_dir, run)
    return load_record(path) if path.exists() else None


def read_records(out_dir) -> tuple[list[RunRecord], list[RecordError]]:
    """Every record in a results directory, and the files that could not be read."""
    found, problems = [], []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            found.append(load_record(path))
        except RecordError as error:
            problems.append(error)
    return found, problems


@contextmanager
def claim(out_dir, run: str, holder: str) -> Iterator[None]:
    """Hold the run's lock (DIR/<run_id>/lock) while training it; RunBusy if another process holds it.

    An advisory flock: released by the kernel when its process dies, so a killed job never leaves a run
    locked. `holder` (host, pid, job) is written into the file for the message others get.
    """
    path = checkpoint_dir(out_dir, run) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise RunBusy(f"run {run} is being trained by {lock.read().strip() or 'another process'}") from None
        lock.truncate(0)
        lock.write(holder)
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_claimed(out_dir, run: str) -> bool:
    """Whether a live process on this machine (or one sharing the lock file's file system) trains the run."""
    path = checkpoint_dir(out_dir, run) / "lock"
    if not path.exists():
        return False
    with open(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


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
