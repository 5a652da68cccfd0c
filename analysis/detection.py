"""Detectron2 runs in the analysis: their table (one row per finished run), a table per detection grid, and box AP
(mask AP, mIoU) vs GFLOPs beside the published COCO and Cityscapes points (results/paper/coco.csv,
cityscapes.csv). Own runs on another dataset (e.g. the generated fashion_coco set) get their own panel: their
numbers are not COCO numbers.
"""

import copy

import pandas as pd

from ablations import records
from ablations.detection import METRICS, parts
from involution.published import published_rows

SEED_AXIS = "SEED"
METRIC_LABELS = {
    "box_ap": "box AP",
    "box_ap50": "AP50",
    "box_ap75": "AP75",
    "box_ap_small": "APs",
    "box_ap_medium": "APm",
    "box_ap_large": "APl",
    "mask_ap": "mask AP",
    "miou": "mIoU",
}
# Metric -> (label, published table, its column, the published datasets' name and input size)
FIGURE_METRICS = {
    "box_ap": ("box AP", "coco", "box_ap", "COCO val2017 (1280x800)"),
    "mask_ap": ("mask AP", "coco", "mask_ap", "COCO val2017 (1280x800)"),
    "miou": ("mIoU", "cityscapes", "miou", "Cityscapes val (2048x1024)"),
}
PUBLISHED_DATASETS = {"coco": ("coco_2017_val",), "cityscapes": ("cityscapes_fine_sem_seg_val",)}
DETECTORS = {  # detector -> colour
    "Faster R-CNN": "tab:blue",
    "Mask R-CNN": "tab:red",
    "RetinaNet": "tab:green",
    "Semantic FPN": "tab:purple",
    "UPerNet": "tab:brown",
}
BACKBONE_MARKERS = {"RedNet": "o", "ResNet": "s"}


def dataset_label(name: str) -> str:
    """The dataset a run was evaluated on, saying when it is the generated set."""
    return f"{name} (generated, not COCO)" if name.startswith("fashion_coco") else name


def row(record: records.RunRecord, directory) -> dict:
    """The table row of a finished Detectron2 run."""
    cfg = record.config["detectron2"]
    return {
        "run_id": record.run_id,
        "directory": str(directory),
        "grids": ",".join(sorted(record.grids)),
        "model": record.model,
        **parts(cfg),
        "config_file": record.config.get("source", {}).get("config_file"),
        "dataset": ",".join(cfg["DATASETS"]["TEST"]),
        "seed": cfg["SEED"],
        "iterations": record.iterations,
        **{metric: getattr(record, metric) for metric in METRICS},
        "params_m": record.params / 1e6 if record.params else None,
        "gflops": record.flops / 1e9 if record.flops else None,
        "flops_convention": record.flops_convention,
        "images_per_s": record.images_per_s,
        "wall_time_s": record.wall_time_s,
        "git_commit": record.git_commit,
        "cell": cell_id(record.config),
        **{f"{grid}:{axis}": value for grid, values in record.grids.items() for axis, value in values.items()},
    }


def cell_id(config: dict) -> str:
    """The run's id without its seed: the runs of one cell differ only in SEED."""
    config = copy.deepcopy(config)
    config["detectron2"].pop("SEED", None)
    return records.run_id(config)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: each metric's mean and standard deviation over seeds, and the number of seeds."""
    if runs.empty:
        return runs
    grouped = runs.groupby("cell", sort=False)
    constant = ["model", "detector", "backbone", "neck", "head", "dataset", "iterations", "params_m", "gflops"]
    cells = grouped[constant].first()
    for metric in METRICS:
        cells[f"{metric}_mean"] = grouped[metric].mean()
        cells[f"{metric}_std"] = grouped[metric].std(ddof=1)
    cells["seeds"] = grouped["seed"].nunique()
    cells["images_per_s"] = grouped["images_per_s"].mean()
    cells["grids"] = grouped["grids"].first()
    return cells.reset_index()


def _mean_std(cell, metric: str) -> str:
    text = f"{cell[f'{metric}_mean']:.2f}"
    if cell["seeds"] > 1:
        text += f" ± {cell[f'{metric}_std']:.2f}"
    return text


def grid_table(runs: pd.DataFrame, grid: str, axes: list) -> pd.DataFrame:
    """One row per cell of a detection grid: its axis values, cost, and each metric it has (mean ± std)."""
    mine = runs[runs["grids"].str.split(",").apply(lambda names: grid in names)]
    if mine.empty:
        return pd.DataFrame()
    cells = aggregate(mine)
    first = mine.groupby("cell", sort=False).first()
    shown = pd.DataFrame({axis: first[f"{grid}:{axis}"].values for axis in axes if axis != SEED_AXIS})
    shown["model"] = cells["model"]
    shown["dataset"] = cells["dataset"].map(dataset_label)
    shown["iterations"] = cells["iterations"]
    shown["params (M)"] = cells["params_m"].map(lambda v: f"{v:.2f}")
    shown["GFLOPs"] = cells["gflops"].map(lambda v: f"{v:.2f}")
    for metric, name in METRIC_LABELS.items():
        if cells[f"{metric}_mean"].notna().any():
            shown[name] = cells.apply(lambda cell, m=metric: _mean_std(cell, m), axis=1)
    shown["seeds"] = cells["seeds"]
    shown["train img/s"] = cells["images_per_s"].map(lambda v: f"{v:.1f}")
    by = [axis for axis in axes if axis != SEED_AXIS]
    return shown.sort_values(by, key=lambda column: column.astype(str)).reset_index(drop=True) if by else shown


def published_table(name: str) -> pd.DataFrame:
    """results/paper/<name>.csv (coco or cityscapes), with a detector column for both."""
    paper = pd.DataFrame(published_rows(name))
    if "method" in paper:
        paper = paper.rename(columns={"method": "detector"})
    return paper


def label(row) -> str:
    """e.g. "Mask R-CNN RedNet-50 inv. neck+head"."""
    variant = {("involution", "involution"): " inv. neck+head", ("involution", "conv"): " inv. neck"}
    variant = variant.get((row["neck"], row.get("head")), " inv. neck" if row["neck"] == "involution" else "")
    return f"{row['detector']} {row['backbone']}{variant}"


def collect_runs(found: list) -> tuple[pd.DataFrame, dict, list, dict]:
    """From (record, path) pairs of Detectron2 runs: the table of finished runs (one row per run id), each
    grid's axes, what was left out (why, message) and each grid's unfinished runs {run_id: status}."""
    rows, axes, skipped, unfinished = {}, {}, [], {}
    finished = {record.run_id for record, _ in found if record.status == records.FINISHED}
    for record, path in found:
        for grid, values in record.grids.items():
            axes.setdefault(grid, list(values))
        if record.status != records.FINISHED:
            if record.run_id not in finished:
                for grid in record.grids:
                    unfinished.setdefault(grid, {})[record.run_id] = record.status
                skipped.append((record.status, f"{path}: {record.status}"))
        elif record.run_id in rows:
            skipped.append(("duplicate", f"{path}: same run as {rows[record.run_id]['directory']}"))
        else:
            rows[record.run_id] = row(record, path.parent)
    return pd.DataFrame(list(rows.values())), axes, skipped, unfinished
