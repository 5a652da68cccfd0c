"""Run records -> one tidy pandas table (one row per finished run) and its aggregate over seeds.

Columns: run_id, results directory, grids, model, model options (JSON), family (rednet/resnet/sasa), depth,
dataset, input size, seed, top1, top5, params, FLOPs, images/s, wall time, epochs, the test top-1 after each epoch,
device, git commit, and one column per grid axis found in the runs (its value read from each run's config, so a run
shared by two grids has both).
A run found in several directories is one row (copies with other results are named and left out).
Unreadable files, failed and unfinished runs are reported (counted and named) and kept out of the table.
"""

import collections
import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations import detection, records
from ablations.config import ConfigError
from involution.published import published_rows

from . import detection as detection_runs

SEED_AXIS = "train.seed"


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per finished run
    axes: dict  # grid name -> its axis keys, in file order
    skipped: list = field(default_factory=list)  # (why: unreadable/pending/running/failed/..., message) per file
    unfinished: dict = field(default_factory=dict)  # grid name -> {run_id: status} of its runs not finished
    # Detectron2 runs (analysis.detection): their own table, grids and unfinished runs
    detection: pd.DataFrame = field(default_factory=pd.DataFrame)
    detection_axes: dict = field(default_factory=dict)
    detection_unfinished: dict = field(default_factory=dict)

    def runs_of(self, grid: str) -> pd.DataFrame:
        """The finished runs that belong to a grid (none when no run has finished)."""
        if self.runs.empty:
            return self.runs
        return self.runs[self.runs["grids"].str.split(",").apply(lambda names: grid in names)]

    def summary(self) -> str:
        counts = collections.Counter(why for why, _ in self.skipped)
        left_out = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
        detected = f" and {len(self.detection)} finished Detectron2 runs" if not self.detection.empty else ""
        return f"{len(self.runs)} finished runs{detected}" + (f"; left out: {left_out}" if left_out else "")


def collect(directories) -> Collection:
    found, axes, skipped = [], {}, []
    for directory in map(Path, directories):
        if not directory.is_dir():
            raise ConfigError(f"no results directory {directory}")
        readable, problems = records.read_records(directory)
        skipped += [("unreadable", str(problem)) for problem in problems]
        found += [(record, records.record_path(directory, record.run_id)) for record in readable]
    detected = [(record, path) for record, path in found if detection.kind(record.config) == detection.KIND]
    found = [(record, path) for record, path in found if detection.kind(record.config) != detection.KIND]
    detection_table, detection_axes, detection_skipped, detection_unfinished = detection_runs.collect_runs(detected)
    skipped += detection_skipped
    finished = {record.run_id for record, _ in found if _finished(record)}
    rows, first_copy, unfinished = {}, {}, collections.defaultdict(dict)
    for record, path in found:
        for grid, values in record.grids.items():
            axes.setdefault(grid or "(unnamed grid)", list(values))
        if not _finished(record):
            if record.run_id not in finished:  # else another directory holds it finished
                for grid in record.grids:
                    unfinished[grid or "(unnamed grid)"][record.run_id] = record.status
                detail = f" ({record.error.strip().splitlines()[-1]})" if record.error else ""
                skipped.append((record.status, f"{path}: {record.status}{detail}"))
            continue
        if record.run_id not in rows:
            rows[record.run_id], first_copy[record.run_id] = _row(record, path.parent), (record, path)
            continue
        kept, kept_path = first_copy[record.run_id]
        if _results(record) != _results(kept):
            skipped.append(("conflicting copy", f"{path}: conflicts with {kept_path} ({_differences(kept, record)}); "
                            f"kept {kept_path}"))  # fmt: skip
            continue
        skipped.append(("duplicate", f"{path}: same run as {kept_path}"))
        row = rows[record.run_id]  # the grids that claim a run are not a result: merge them
        merged = set(row["grids"].split(",")) | set(record.grids)
        row["grids"] = ",".join(sorted(g for g in merged if g))
    runs = _with_axes(pd.DataFrame(list(rows.values())), axes)
    return Collection(runs, axes, skipped, dict(unfinished), detection_table, detection_axes, detection_unfinished)


def _finished(record: records.RunRecord) -> bool:
    return record.status == records.FINISHED and record.top1 is not None


def _results(record: records.RunRecord) -> tuple:
    """What two copies of one finished run must agree on to be the same result."""
    return record.top1, record.top5, len(record.epochs)


def _differences(kept: records.RunRecord, other: records.RunRecord) -> str:
    names = ("top-1", "top-5", "epochs")
    return ", ".join(f"{n} {a} vs {b}" for n, a, b in zip(names, _results(kept), _results(other)) if a != b)


def _with_axes(runs: pd.DataFrame, axes: dict) -> pd.DataFrame:
    """Add one column per grid axis, read from each run's config."""
    if runs.empty:
        return runs
    configs = runs.pop("_config")
    for key in dict.fromkeys(key for keys in axes.values() for key in keys):
        values = [_axis_value(config, key) for config in configs]
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None)
        runs[key] = pd.array(values, dtype="Int64") if whole else values  # ints stay ints beside missing values
    return runs


def _row(record: records.RunRecord, directory: Path) -> dict:
    family, depth = _family_depth(record.model or "")
    data = record.config.get("data", {})
    size = re.search(r"(\d+x\d+x\d+)", record.flops_convention or "")
    return {
        "run_id": record.run_id,
        "directory": str(directory),
        "grids": ",".join(sorted(record.grids)),
        "model": record.model,
        "model_options": json.dumps(record.config.get("model", {}).get("options", {}), sort_keys=True),
        "family": family,
        "depth": depth,
        "dataset": data.get("dataset"),
        "train_images": data.get("train_subset"),
        "input_size": size.group(1) if size else None,
        "epochs": len(record.epochs),
        "epoch_top1": [epoch.get("top1") for epoch in record.epochs],
        "seed": record.config.get("train", {}).get("seed"),
        "top1": record.top1,
        "top5": record.top5,
        "params_m": record.params / 1e6 if record.params else None,
        "gflops": record.flops / 1e9 if record.flops else None,
        "images_per_s": record.images_per_s,
        "wall_time_s": record.wall_time_s,
        "device": _device(record.hardware),
        "git_commit": record.git_commit,
        "cell": _cell_id(record.config),
        "_config": record.config,
    }


def _device(hardware: dict) -> str:
    """e.g. "NVIDIA H100 x8" or "CPU, 1 thread x2 processes"."""
    processes = hardware.get("processes") or 1
    each = f" x{processes} processes" if processes > 1 else ""
    if hardware.get("gpu"):
        return f"{hardware['gpu']}{each}"
    threads = hardware.get("threads")
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}{each}" if threads else "CPU"


def _family_depth(model: str) -> tuple:
    match = re.fullmatch(r"([a-z]+?)(\d+)", model)
    return (match.group(1), int(match.group(2))) if match else (model, None)


def _cell_id(config: dict) -> str:
    """The run's id without its seed: the runs of one cell differ only in the seed."""
    config = copy.deepcopy(config)
    config.get("train", {}).pop("seed", None)
    return records.run_id(config)


def _axis_value(config: dict, key: str):
    """The run's value of a grid axis; a whole section (e.g. model: {name, options}) shows as its name (the
    model's options are in the model_options column)."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        return node.get("name", json.dumps(node, sort_keys=True))
    return node


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (runs that differ only in their seed): top-1/top-5 mean, std and number of seeds."""
    if runs.empty:
        return runs
    varying = ("cell", "run_id", "seed", SEED_AXIS, "top1", "top5", "epoch_top1", "images_per_s", "wall_time_s",
               "git_commit")  # fmt: skip
    constant = [c for c in runs.columns if c not in varying]
    grouped = runs.groupby("cell", sort=False)
    table = grouped[constant].first()
    for metric in ("top1", "top5"):
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=1)
    table["seeds"] = grouped["seed"].nunique()
    table["images_per_s"] = grouped["images_per_s"].mean()
    table["wall_time_s"] = grouped["wall_time_s"].mean()
    return table.reset_index()


def seed_noise(runs: pd.DataFrame) -> tuple:
    """Pooled standard deviation of top-1 between seeds of one cell, and the number of cells it pools."""
    groups = [g["top1"] for _, g in runs.groupby("cell") if len(g) > 1] if not runs.empty else []
    if not groups:
        return None, 0
    dof = sum(len(g) - 1 for g in groups)
    pooled = sum(((g - g.mean()) ** 2).sum() for g in groups) / dof
    return float(pooled**0.5), len(groups)


def paper_table() -> pd.DataFrame:
    """Published ImageNet numbers (results/paper/imagenet.csv) with family and depth columns."""
    paper = pd.DataFrame(published_rows("imagenet"))
    paper[["family", "depth"]] = [
        _family_depth(name) if isinstance(name, str) else (None, None) for name in paper["registry_name"]
    ]
    return paper
