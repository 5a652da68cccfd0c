"""Run records: the one schema of a run's result file, its id, atomic writes, and the run's lock.

A run's record is DIR/<run_id>.json, always replaced atomically: a run killed at any point leaves either
its previous record or its new one, never a half-written file, so concurrent jobs can share one results
directory. Every writer (the launcher, the training run, the launcher marking a dead job failed) goes
through ``write_record``, which, under the record's own lock, keeps the grid memberships already on disk:
a launch adding a grid to a run never loses it to a job rewriting that run's record.

Imports neither torch nor the model zoo: analysis reads records with this module alone.
"""

import copy
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

PENDING, RUNNING, FINISHED, FAILED = "pending", "running", "finished", "failed"
STATUSES = (PENDING, RUNNING, FINISHED, FAILED)
# 1: before grid membership and job ids were kept (flat "grid_values", ids hashed every config key).
# 2: "grids" (grid name -> axis values) and "job_id" kept through rewrites; ids leave out NON_RESULT_KEYS.
SCHEMA_VERSION = 2
# Config keys that do not change a run's result, left out of its id: moving the dataset, or changing the
# loader workers or CPU threads, does not re-run a finished grid (a folder dataset is identified by
# data.fingerprint instead of its path).
# A Detectron2 run (ablations.detection): where its config came from, its output folder, loader workers and device.
NON_RESULT_KEYS = (
    "data.root",
    "data.num_workers",
    "train.threads",
    "source",
    "detectron2.OUTPUT_DIR",
    "detectron2.DATALOADER.NUM_WORKERS",
    "detectron2.MODEL.DEVICE",
)
# The id baseline: every config key added since schema 2's ids, with the value that reproduces the behaviour
# from before it. A key at its baseline value is left out of the id, so adding a key never orphans finished
# runs. A new result-changing key goes here, with a default equal to its baseline.
ID_BASELINE = {"data.fingerprint": None, "optim.cosine_by_epoch": False, "train.official_init": False}


class RecordError(ValueError):
    """A record file that cannot be read (truncated, not JSON, not a run record); the message names it."""


class RunBusy(RuntimeError):
    """Another process holds the run: two jobs never train one run at once."""


def result_config(resolved_config: dict) -> dict:
    """The resolved config without NON_RESULT_KEYS and without keys at their ID_BASELINE value: what a run's
    result depends on, in the form ids have always hashed it."""
    config = copy.deepcopy(resolved_config)
    for key in (*NON_RESULT_KEYS, *ID_BASELINE):
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part, {})
        if key in NON_RESULT_KEYS or (leaf in node and node[leaf] == ID_BASELINE[key]):
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
    # Detectron2 runs (percent): COCO box AP (at IoU .5:.95, .5, .75; small, medium, large objects), mask AP, mIoU.
    box_ap: Optional[float] = None
    box_ap50: Optional[float] = None
    box_ap75: Optional[float] = None
    box_ap_small: Optional[float] = None
    box_ap_medium: Optional[float] = None
    box_ap_large: Optional[float] = None
    mask_ap: Optional[float] = None
    miou: Optional[float] = None
    iterations: Optional[int] = None  # Detectron2 runs: training iterations done
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
        """The record in `data`, or RecordError naming `source` and the first field of the wrong type."""
        if not isinstance(data, dict) or not {"run_id", "status"} <= set(data):
            raise RecordError(f"{source}: not a run record (no run_id/status)")
        version = data.get("version", 1)
        if not _is_int(version):
            raise RecordError(f"{source}: version: expected an integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise RecordError(f"{source}: record schema {version} is newer than this code's {SCHEMA_VERSION}")
        hints = typing.get_type_hints(cls)
        values = {key: value for key, value in data.items() if key in hints}
        if version == 1 and data.get("grid_values"):
            values["grids"] = {"": data["grid_values"]}  # v1 did not name the grid
        values.setdefault("config", {})
        values["version"] = version
        for key, value in values.items():
            if not _has_type(value, hints[key]):
                raise RecordError(f"{source}: {key}: expected {_type_name(hints[key])}, got {value!r:.80}")
        if values["status"] not in STATUSES:
            raise RecordError(f"{source}: status: expected one of {', '.join(STATUSES)}, got {values['status']!r}")
        bad = [grid for grid, axes in values.get("grids", {}).items() if not isinstance(axes, dict)]
        if bad:
            raise RecordError(f"{source}: grids: {bad[0]!r}: expected a mapping of axis values")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def headline(self) -> str:
        """The run's main result in a few words, e.g. "top1 71.20%" or "box AP 9.1, mask AP 8.4"."""
        shown = [(name, getattr(self, key), unit) for key, name, unit in HEADLINE]
        return ", ".join(f"{name} {value:.2f}{unit}" for name, value, unit in shown if value is not None) or "-"


HEADLINE = (("top1", "top1", "%"), ("box_ap", "box AP", ""), ("mask_ap", "mask AP", ""), ("miou", "mIoU", ""))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value, annotation) -> bool:
    """Whether a JSON value fits a field's annotation (an integer fits a float field)."""
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        return value is None or _has_type(value, typing.get_args(annotation)[0])
    if annotation is float:
        return _is_int(value) or isinstance(value, float)
    if annotation is int:
        return _is_int(value)
    return isinstance(value, annotation)


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Union:
        return f"{_type_name(typing.get_args(annotation)[0])} or null"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}[annotation]


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


@contextmanager
def _record_lock(out_dir, run: str) -> Iterator[None]:
    """The record's own lock (DIR/<run_id>/record.lock), held only across one read-modify-write: unlike the
    run's lock it is never held for long, so the launcher waits for it."""
    path = checkpoint_dir(out_dir, run) / "record.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_record(out_dir, record: RunRecord) -> Path:
    """Write the record, keeping the grid memberships of the one on disk (a run never leaves a grid)."""
    with _record_lock(out_dir, record.run_id):
        on_disk = read_record(out_dir, record.run_id)
        if on_disk:
            record.grids = {**on_disk.grids, **record.grids}
        return _replace_record(out_dir, record)


def add_memberships(out_dir, grids_of: dict[str, dict]) -> None:
    """Record that each existing run (run id -> {grid name: axis values}) belongs to these grids: every
    launch calls it for all its cells, finished, live or new, so each grid's table lists all its cells."""
    for run, grids in grids_of.items():
        if not record_path(out_dir, run).exists():  # a run not launched yet: its pending record will say it
            continue
        with _record_lock(out_dir, run):
            record = read_record(out_dir, run)
            if record and any(record.grids.get(grid) != values for grid, values in grids.items()):
                record.grids = {**record.grids, **grids}
                _replace_record(out_dir, record)


def _replace_record(out_dir, record: RunRecord) -> Path:
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


def is_finished(record: Optional[RunRecord]) -> bool:
    """Whether a run is done: the one test (training itself, the jobs, and the launcher's slurm.plan)."""
    return record is not None and record.status == FINISHED
