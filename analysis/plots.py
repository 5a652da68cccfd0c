"""The paper's figures from the user's own runs, beside the published points.

- accuracy vs complexity (top-1 vs FLOPs, top-1 vs parameters): every published series (RedNet, ResNet, SASA,
  SAN, LR-Net, Axial-ResNet) with its own colour and marker; own runs open. Own runs on another dataset or input
  size get their own panel: their numbers are not ImageNet numbers.
- one figure per ablation axis of each grid, with error bars over seeds (standard deviation), one line per
  combination of the grid's other axes (e.g. per model when a grid sweeps the model and the kernel size);
- speed: top-1 vs measured training images/s, and images/s vs FLOPs (how far FLOPs are from speed).
Every figure is written as PNG and SVG.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import detection  # noqa: E402
from .collect import SEED_AXIS, Collection, aggregate, paper_table  # noqa: E402

FAMILIES = {  # family -> (label, colour, marker)
    "rednet": ("RedNet (involution)", "tab:blue", "o"),
    "resnet": ("ResNet (convolution)", "tab:orange", "s"),
    "sasa": ("SASA (local self-attention)", "tab:green", "^"),
}
OTHER = ("other", "0.4", "D")
PUBLISHED_SERIES = {  # results/paper/imagenet.csv series -> (colour, marker, line style)
    "RedNet": ("tab:blue", "o", "-"),
    "ResNet": ("tab:orange", "s", "-"),
    "SASA (conv stem)": ("tab:green", "^", "-"),
    "SASA (full attention)": ("tab:green", "v", "--"),
    "SAN pairwise": ("tab:purple", "P", "-"),
    "SAN patchwise": ("tab:purple", "X", "--"),
    "LR-Net": ("tab:brown", "D", "-"),
    "Axial-ResNet": ("tab:pink", "*", "-"),
}
VARIANT_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
AXIS_LABELS = {
    "model.options.kernel_size": "kernel size K",
    "model.options.group_channels": "channels per group (C/G)",
    "model.options.reduction_ratio": "reduction ratio r",
    "model.options.kernel_generation": "kernel generation",
    "model": "model",
}
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9, "svg.fonttype": "none"})


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def _save(fig, out_dir: Path, name: str, title: str, caption: str) -> Figure:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, dpi=150)
    fig.savefig(svg)
    plt.close(fig)
    return Figure(name, title, caption, png, svg)


def _style(family):
    return FAMILIES.get(family, OTHER)


def _dataset_label(cells: pd.DataFrame) -> str:
    dataset = cells["dataset"].iloc[0]
    size = cells["input_size"].iloc[0]
    images = cells["train_images"].iloc[0]
    subset = f", {int(images)} training images" if pd.notna(images) else ""
    return f"{dataset}\n({size}{subset}, {int(cells['epochs'].max())} epochs)"


def _flops_scale(values: pd.Series) -> tuple:
    """(factor, unit) to show FLOPs given in G: MFLOPs for small models."""
    return (1e3, "MFLOPs") if values.max() < 0.1 else (1.0, "GFLOPs")


def cell_labels(cells: pd.DataFrame, axes: dict, leave_out=()) -> pd.Series:
    """A short name per cell: the model, plus the values of the grid axes that tell its cells apart (the axes in
    `leave_out` are not named)."""
    keys = [k for k in dict.fromkeys(k for keys in axes.values() for k in keys) if k in cells]
    varying = [
        k for k in keys if k not in (SEED_AXIS, "model", *leave_out) and cells[k].nunique(dropna=True) > 1
    ]  # fmt: skip
    labels = []
    for (_, cell), model in zip(cells.iterrows(), model_labels(cells, axes)):
        labels.append(" ".join([model, *(f"{_short(k)}={cell[k]}" for k in varying if pd.notna(cell[k]))]))
    return pd.Series(labels, index=cells.index)


def model_labels(cells: pd.DataFrame, axes: dict) -> list:
    """The model's name, plus the options that tell two variants of that model apart among these cells (e.g.
    "rednet26 kernel_size=7"), except options that are grid axes of their own."""
    swept = {k.removeprefix("model.options.") for keys in axes.values() for k in keys}
    options = [json.loads(o) if isinstance(o, str) else {} for o in cells.get("model_options", [None] * len(cells))]
    labels = []
    for name, own in zip(cells["model"], options):
        same = [o for n, o in zip(cells["model"], options) if n == name]
        differing = [k for k in own if k not in swept and any(o.get(k) != own[k] for o in same)]
        labels.append(" ".join([str(name), *(f"{k}={own[k]}" for k in differing)]))
    return labels


def _short(axis: str) -> str:
    """kernel size K -> K; model.options.width -> width."""
    return AXIS_LABELS.get(axis, axis.split(".")[-1]).split(" ")[-1]


def _annotate(ax, x, y, text):
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def complexity_figures(collection: Collection, out_dir: Path) -> list[Figure]:
    paper = paper_table()
    cells = aggregate(collection.runs)
    cells = cells.assign(label=cell_labels(cells, collection.axes)) if not cells.empty else cells
    figures = []
    for x, xlabel, name in (("flops_g", "GFLOPs", "top1_vs_flops"), ("params_m", "parameters (M)", "top1_vs_params")):
        own_sets = [group for _, group in cells.groupby("dataset")] if not cells.empty else []
        fig, axes = plt.subplots(
            1, 1 + len(own_sets), figsize=(5.2 * (1 + len(own_sets)), 4.6), layout="constrained", squeeze=False
        )
        ax = axes[0, 0]
        for series, rows in paper.groupby("series", sort=False):
            colour, marker, line = PUBLISHED_SERIES.get(series, OTHER[1:] + ("-",))
            rows = rows.sort_values(x)
            ax.plot(rows[x], rows["top1"], line, color=colour, marker=marker, ms=6, alpha=0.8, label=series)
            for _, row in rows.iterrows():
                if series in ("RedNet", "ResNet"):
                    _annotate(ax, row[x], row["top1"], row["model"].split("-")[-1])
        ax.legend(title="published", loc="lower right", fontsize=7, title_fontsize=8, frameon=False)
        ax.set(title="Published: ImageNet (224x224)", xlabel=xlabel, ylabel="top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        for ax, own in zip(axes[0, 1:], own_sets):
            column, unit_label = ("gflops", xlabel) if x == "flops_g" else ("params_m", xlabel)
            factor = 1.0
            if x == "flops_g":
                factor, unit = _flops_scale(own["gflops"])
                unit_label = unit
            for family, rows in own.groupby("family", sort=False):
                label, colour, marker = _style(family)
                rows = rows.sort_values(column)
                ax.errorbar(
                    rows[column] * factor,
                    rows["top1_mean"],
                    yerr=rows["top1_std"].fillna(0),
                    fmt=marker,
                    mfc="white",
                    color=colour,
                    capsize=3,
                    ms=7,
                )
                for _, row in rows.iterrows():
                    _annotate(ax, row[column] * factor, row["top1_mean"], row["label"])
            ax.set(title=f"Own runs: {_dataset_label(own)}", xlabel=unit_label, ylabel="top-1 accuracy (%)")
            ax.grid(alpha=0.3)
            ax.margins(x=0.25, y=0.15)
        if own_sets:
            families = [f for f in FAMILIES if f in set(cells["family"])] + sorted(set(cells["family"]) - set(FAMILIES))
            handles = [
                plt.Line2D([], [], color=_style(f)[1], marker=_style(f)[2], mfc="white", ls="", label=_style(f)[0])
                for f in families
            ]
            fig.legend(handles=handles, title="own runs (open; mean ± std over seeds)", loc="outside lower center",
                       ncols=len(handles), frameon=False)  # fmt: skip
        what = "FLOPs (multiply-adds per image)" if x == "flops_g" else "parameters"
        figures.append(
            _save(
                fig,
                out_dir,
                name,
                f"Top-1 accuracy vs {what}",
                "Published ImageNet numbers (left; sources and recipes in results/paper/imagenet.csv) beside this "
                "study's runs; own runs on another dataset are drawn on their own axes, since their accuracy is not "
                "comparable with ImageNet's. The ResNet-26/38/50 points are the SAN authors' 100-epoch ResNets; "
                "ResNets trained with RedNet's 130-epoch recipe are expected to land above them.",
            )
        )
    return figures


def ablation_figures(collection: Collection, out_dir: Path) -> list[Figure]:
    """One figure per grid axis (the seed axis excluded), top-1 mean ± std over seeds."""
    figures = []
    for grid, keys in collection.axes.items():
        runs = collection.runs_of(grid)
        axes = [k for k in keys if k != SEED_AXIS]
        if runs.empty or not axes:
            continue
        cells = aggregate(runs)
        for axis in axes:
            fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
            if axis == "model":
                _plot_operators(ax, cells, {grid: keys})
                xlabel = "depth (layers)"
            else:
                _plot_axis(ax, cells, axis, {grid: keys})
                xlabel = AXIS_LABELS.get(axis, axis)
            seeds = int(cells["seeds"].max())
            ax.set(
                title=f"{grid}: top-1 vs {xlabel}",
                xlabel=xlabel,
                ylabel=f"top-1 accuracy (%), mean ± std of {seeds} seed(s)",
            )
            ax.grid(alpha=0.3, axis="y")
            name = f"ablation_{grid}_{axis.split('.')[-1]}".replace(" ", "_")
            figures.append(
                _save(
                    fig,
                    out_dir,
                    name,
                    f"{grid}: {xlabel}",
                    f"Grid '{grid}' on {_dataset_label(cells)}; error bars: standard deviation over seeds.",
                )
            )
    return figures


def _series(cells: pd.DataFrame, labels: pd.Series) -> list:
    """(family, label, colour, marker, rows) per line: the family's colour, a marker per variant within it."""
    families = [f for f in FAMILIES if f in set(cells["family"])] + sorted(set(cells["family"]) - set(FAMILIES))
    series = []
    for family in families:
        in_family = labels[cells["family"] == family]
        for i, label in enumerate(sorted(set(in_family), key=_natural)):
            name, colour, marker = _style(family)
            marker = marker if i == 0 else VARIANT_MARKERS[i % len(VARIANT_MARKERS)]
            rows = cells.loc[in_family.index[in_family == label]]
            series.append((family, f"{name} {label}".strip(), colour, marker, rows))
    return series


def _natural(text: str) -> list:
    """Sort key that puts "K=5" before "K=11" and rednet26 before rednet101."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _plot_operators(ax, cells: pd.DataFrame, axes: dict) -> None:
    """Side by side at each depth, one point per family and variant (mean ± std): points, not bars, since the
    accuracy axis does not start at zero."""
    depths = sorted(cells["depth"].dropna().unique())
    # a variant is the cell's label without its model name, e.g. "K=5" (the family names the model)
    variants = cell_labels(cells, axes).str.partition(" ")[2]
    series = _series(cells, variants)
    width = 0.6 / max(1, len(series) - 1) if len(series) > 1 else 0
    for i, (_, label, colour, marker, rows) in enumerate(series):
        positions = [depths.index(d) + (i - (len(series) - 1) / 2) * width for d in rows["depth"]]
        ax.errorbar(positions, rows["top1_mean"], yerr=rows["top1_std"].fillna(0), fmt=marker, color=colour,
                    capsize=4, ms=8, label=label)  # fmt: skip
        for x, y in zip(positions, rows["top1_mean"]):
            _annotate(ax, x, y, f"{y:.2f}")
    ax.set_xticks(range(len(depths)), [str(int(d)) for d in depths])
    ax.set_xlim(-0.6, len(depths) - 0.4)
    ax.margins(y=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _plot_axis(ax, cells: pd.DataFrame, axis: str, axes: dict) -> None:
    """One line per combination of the grid's other axes (the model among them)."""
    values = cells[axis]
    numeric = pd.api.types.is_numeric_dtype(values)
    categories = list(dict.fromkeys(values))
    for _, label, colour, marker, rows in _series(cells, cell_labels(cells, axes, leave_out=[axis])):
        rows = rows.sort_values(axis) if numeric else rows
        x = list(rows[axis]) if numeric else [categories.index(v) for v in rows[axis]]
        ax.errorbar(x, rows["top1_mean"], yerr=rows["top1_std"].fillna(0), fmt=f"-{marker}", color=colour,
                    capsize=3, label=label)  # fmt: skip
        for xi, (_, row) in zip(x, rows.iterrows()):
            _annotate(ax, xi, row["top1_mean"], f"{row['top1_mean']:.2f}")
    if numeric:
        ax.set_xticks(sorted(values.unique()))
    else:
        ax.set_xticks(range(len(categories)), [str(v) for v in categories])
    ax.margins(x=0.15, y=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def speed_figure(collection: Collection, out_dir: Path) -> list[Figure]:
    cells = aggregate(collection.runs)
    if cells.empty or cells["images_per_s"].isna().all():
        return []
    cells = cells.assign(label=cell_labels(cells, collection.axes))
    factor, unit = _flops_scale(cells["gflops"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for family, rows in cells.groupby("family", sort=False):
        label, colour, marker = _style(family)
        left.errorbar(rows["images_per_s"], rows["top1_mean"], yerr=rows["top1_std"].fillna(0), fmt=marker,
                      color=colour, capsize=3, ms=7, label=label)  # fmt: skip
        right.scatter(rows["gflops"] * factor, rows["images_per_s"], color=colour, marker=marker, s=40)
        for _, row in rows.iterrows():
            _annotate(left, row["images_per_s"], row["top1_mean"], row["label"])
            _annotate(right, row["gflops"] * factor, row["images_per_s"], row["label"])
    device = ", ".join(sorted(cells["device"].dropna().unique()))
    left.set(title="Accuracy vs measured training speed", xlabel="training images/s", ylabel="top-1 accuracy (%)")
    right.set(title="Measured speed vs FLOPs", xlabel=f"{unit} per image", ylabel="training images/s")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.margins(0.2)
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"Speed on {device} ({_dataset_label(cells)})", fontsize=10)
    return [
        _save(
            fig,
            out_dir,
            "speed",
            "Speed: accuracy vs images/s, images/s vs FLOPs",
            f"Training throughput recorded by each run (mean over epochs and seeds) on {device}. Fewer FLOPs do not "
            "mean faster training: the right panel shows how far FLOPs are from measured speed.",
        )
    ]


def all_figures(collection: Collection, out_dir: Path) -> list[Figure]:
    out_dir = Path(out_dir)
    return [
        *complexity_figures(collection, out_dir),
        *ablation_figures(collection, out_dir),
        *speed_figure(collection, out_dir),
        *detection_figures(collection, out_dir),
    ]


def detection_figures(collection: Collection, out_dir: Path) -> list[Figure]:
    """Box AP, mask AP and mIoU vs GFLOPs: the published points (COCO, Cityscapes) on the first panel, own
    Detectron2 runs on a panel per dataset (on the published panel when they ran on its dataset). A metric
    appears when own runs have it."""
    cells = detection.aggregate(collection.detection)
    figures = []
    for metric, (label, table, column, published_dataset) in detection.FIGURE_METRICS.items():
        if cells.empty or cells[f"{metric}_mean"].isna().all():
            continue
        own = cells[cells[f"{metric}_mean"].notna()]
        on_published = own["dataset"].isin(detection.PUBLISHED_DATASETS[table])
        own_sets = [group for _, group in own[~on_published].groupby("dataset")]
        fig, axes = plt.subplots(
            1, 1 + len(own_sets), figsize=(5.6 * (1 + len(own_sets)), 4.8), layout="constrained", squeeze=False
        )
        paper = detection.published_table(table).dropna(subset=[column])
        ax = axes[0, 0]
        for _, row in paper.iterrows():
            colour = detection.DETECTORS.get(row["detector"], OTHER[1])
            marker = detection.BACKBONE_MARKERS.get(row["backbone"].split("-")[0], OTHER[2])
            ax.plot(row["flops_g"], row[column], marker, color=colour, ms=7, alpha=0.8)
            _annotate(ax, row["flops_g"], row[column], detection.label(row).replace(row["detector"] + " ", ""))
        _plot_own_detection(ax, own[on_published], metric)
        ax.set(title=f"Published: {published_dataset}", xlabel="GFLOPs", ylabel=label)
        for ax, group in zip(axes[0, 1:], own_sets):
            _plot_own_detection(ax, group, metric)
            size = collection.detection.loc[collection.detection["dataset"] == group["dataset"].iloc[0]]
            convention = size["flops_convention"].iloc[0] or ""
            shown = convention.split(", ")[1] if ", " in convention else ""
            ax.set(
                title=f"Own runs: {detection.dataset_label(group['dataset'].iloc[0])}\n"
                f"({shown}, {int(group['iterations'].max())} iterations)",
                xlabel="GFLOPs",
                ylabel=label,
            )
            ax.margins(x=0.3, y=0.2)
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        detectors = sorted(set(paper["detector"]) | set(own["detector"]))
        handles = [
            plt.Line2D([], [], color=detection.DETECTORS.get(name, OTHER[1]), marker="o", ls="", label=name)
            for name in detectors
        ] + [
            plt.Line2D([], [], color="0.3", marker=marker, ls="", label=f"{family} backbone")
            for family, marker in detection.BACKBONE_MARKERS.items()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False,
                   title="filled: published; open: own runs (mean ± std over seeds)")  # fmt: skip
        figures.append(
            _save(
                fig,
                out_dir,
                f"{metric}_vs_flops",
                f"{label} vs FLOPs (detection and segmentation)",
                f"Published {published_dataset} numbers (left; sources and recipes in results/paper/{table}.csv) "
                "beside own Detectron2 runs; own runs on another dataset (e.g. the generated fashion_coco set) are "
                "drawn on their own axes: their numbers are not comparable with the published ones. FLOPs are "
                "multiply-adds of one image at the size each panel states.",
            )
        )
    return figures


def _plot_own_detection(ax, cells: pd.DataFrame, metric: str) -> None:
    for _, cell in cells.iterrows():
        colour = detection.DETECTORS.get(cell["detector"], OTHER[1])
        marker = detection.BACKBONE_MARKERS.get(cell["backbone"].split("-")[0], OTHER[2])
        std = cell[f"{metric}_std"]
        ax.errorbar(
            cell["gflops"],
            cell[f"{metric}_mean"],
            yerr=0 if pd.isna(std) else std,
            fmt=marker,
            mfc="white",
            color=colour,
            capsize=3,
            ms=8,
        )
        _annotate(ax, cell["gflops"], cell[f"{metric}_mean"], detection.label(cell).replace(cell["detector"] + " ", ""))
