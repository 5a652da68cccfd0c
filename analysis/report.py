"""A report of a study: REPORT_DIR/report.md and a self-contained REPORT_DIR/report.html (figures inlined).

It states the dataset of the runs, the number of seeds and the noise of one seed, has a table per grid with
every pair of its cells compared (difference of top-1 with a 95% interval, analysis.stats; its sentences say a
cell is higher only where the interval excludes 0), the comparison with the published numbers (own vs paper,
each with its dataset), and every figure.
"""

import base64
import collections
import html
import itertools
import time
from pathlib import Path

import pandas as pd

from ablations.config import ConfigError

from . import detection
from .collect import SEED_AXIS, Collection, aggregate, paper_table, seed_noise
from .plots import AXIS_LABELS, all_figures, cell_labels, model_labels
from .stats import LEVEL, Difference, compare

PAPER_NOTE = (
    "Published numbers: results/paper/imagenet.csv, where every row names its source and training recipe. "
    "The ResNet-26/38/50 rows are the SAN authors' ResNets, trained for 100 epochs; ResNets trained with "
    "RedNet's 130-epoch recipe (as this repository's ImageNet configs do) are expected to land above them, "
    "so compare own ResNets with own RedNets rather than with those rows."
)

RANKING_NOTE = (
    "Order of the operators' mean top-1 at each depth (which of these differences are called: the grids' "
    "comparisons above):"
)


def _fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _accuracy(row) -> str:
    text = f"{row['top1_mean']:.2f}"
    if row["seeds"] > 1:
        text += f" ± {row['top1_std']:.2f}"
    return text + f" (n={int(row['seeds'])})"


def grid_table(collection: Collection, grid: str) -> pd.DataFrame:
    """One row per cell of the grid's finished runs (empty when none has finished yet)."""
    runs = collection.runs_of(grid)
    if runs.empty:
        return pd.DataFrame()
    cells = aggregate(runs)
    axes = [k for k in collection.axes[grid] if k != SEED_AXIS]
    table = pd.DataFrame({AXIS_LABELS.get(k, k): cells[k] for k in axes})
    table["model"] = model_labels(cells, {grid: axes})
    table["params (M)"] = cells["params_m"].map(lambda v: f"{v:.3f}")
    table["MFLOPs"] = (cells["gflops"] * 1e3).map(lambda v: f"{v:.2f}")
    table["top-1 % (mean ± std, seeds)"] = cells.apply(_accuracy, axis=1)
    table["top-5 %"] = cells["top5_mean"].map(lambda v: f"{v:.2f}")
    table["train img/s"] = cells["images_per_s"].map(lambda v: f"{v:.0f}")
    return table.loc[:, ~table.columns.duplicated()]


def grid_comparisons(collection: Collection, grid: str) -> tuple[pd.DataFrame, str]:
    """Every pair of the grid's finished cells, the higher mean first: the difference of top-1 with its interval
    and what it allows to say; and a summary sentence of those verdicts ("" with fewer than two cells)."""
    runs = collection.runs_of(grid)
    cells = aggregate(runs)
    if len(cells) < 2:
        return pd.DataFrame(), ""
    labels = dict(zip(cells["cell"], cell_labels(cells, {grid: collection.axes[grid]})))
    top1 = {cell: dict(zip(group["seed"], group["top1"])) for cell, group in runs.groupby("cell")}
    rows, called, open_pairs = [], [], []
    for high, low in itertools.combinations(cells.sort_values("top1_mean", ascending=False)["cell"], 2):
        diff = compare(top1[high], top1[low])
        verdict = _verdict(labels[high], labels[low], diff)
        (called if diff.called else open_pairs).append(verdict)
        rows.append(
            {
                "comparison": f"{labels[high]} − {labels[low]}",
                "difference (points)": f"{diff.mean:+.2f}",
                f"{LEVEL:.0%} interval": f"[{diff.low:+.2f}, {diff.high:+.2f}]" if diff.low is not None else "-",
                "test": _test(diff),
                "result": verdict,
            }
        )
    summary = " ".join(
        [f"Called at {LEVEL:.0%}: {'; '.join(called)}." if called else f"No difference is called at {LEVEL:.0%}."]
        + ([f"{'; '.join(open_pairs)}."] if open_pairs else [])
    )
    return pd.DataFrame(rows), summary


def last_epochs_order(collection: Collection, grid: str) -> str:
    """Whether the order of the grid's cells by mean test top-1 changed between the last two epochs ("" when
    its runs do not all hold the test top-1 of the same two or more epochs)."""
    runs = collection.runs_of(grid)
    curves = list(runs["epoch_top1"]) if "epoch_top1" in runs else []
    epochs = {len(curve) for curve in curves}
    if len(epochs) != 1 or min(epochs) < 2 or any(v is None for curve in curves for v in curve[-2:]):
        return ""
    last = epochs.pop()
    cells = aggregate(runs)
    if len(cells) < 2:
        return ""
    labels = dict(zip(cells["cell"], cell_labels(cells, {grid: collection.axes[grid]})))
    by_cell = runs.groupby("cell")["epoch_top1"]
    means = [
        by_cell.apply(lambda curves, e=epoch: sum(c[e - 1] for c in curves) / len(curves)) for epoch in (last - 1, last)
    ]
    orders = [list(m.sort_values(ascending=False).index) for m in means]
    text = [" > ".join(f"{labels[cell]} {m[cell]:.2f}" for cell in order) for m, order in zip(means, orders)]
    verdict = "the same order" if orders[0] == orders[1] else "the order changed: train longer before reading it"
    return f"Mean test top-1 after epoch {last - 1}: {text[0]}; after epoch {last}: {text[1]} ({verdict})."


def _test(diff: Difference) -> str:
    if diff.dof is None:
        return f"none ({diff.seeds} seed)"
    pairing = f"paired by seed, {diff.seeds} pairs" if diff.paired else "unpaired (Welch)"
    return f"{pairing}, Student t with {diff.dof:.3g} df"


def _verdict(high: str, low: str, diff: Difference) -> str:
    if diff.called:
        return f"{high} is higher than {low}"
    seeds = f"{diff.seeds} seed{'s' if diff.seeds != 1 else ''}"
    return f"{high} and {low} are not distinguishable with {seeds}"


def _not_finished(collection: Collection, grid: str) -> str:
    """e.g. "3 pending, 1 running", or "" when every run of the grid has finished."""
    counts = collections.Counter(collection.unfinished.get(grid, {}).values())
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _grid_sections(collection: Collection) -> list[tuple]:
    """(grid, its table or None, its comparisons, their summary, what is not finished yet) per grid, in the
    order the grids were found."""
    sections = []
    for grid in collection.axes:
        table = grid_table(collection, grid)
        comparisons, summary = grid_comparisons(collection, grid)
        summary = " ".join(filter(None, [summary, last_epochs_order(collection, grid)]))
        sections.append(
            (grid, table if not table.empty else None, comparisons, summary, _not_finished(collection, grid))
        )
    return sections


def paper_comparison(collection: Collection) -> pd.DataFrame:
    """Own cells of the registered models beside the published row of the same model (ImageNet)."""
    cells = aggregate(collection.runs)
    if cells.empty:
        return cells
    cells = cells.assign(label=cell_labels(cells, collection.axes))
    paper = paper_table().dropna(subset=["registry_name"]).set_index("registry_name")
    rows = []
    for _, cell in cells.iterrows():
        published = paper.loc[cell["model"]] if cell["model"] in paper.index else None
        rows.append(
            {
                "own run": cell["label"],
                "own dataset": f"{cell['dataset']} {cell['input_size']}",
                "own top-1 %": _accuracy(cell),
                "own params (M)": f"{cell['params_m']:.3f}",
                "own GFLOPs": f"{cell['gflops']:.4f}",
                "paper model": published["model"] if published is not None else "-",
                "paper top-1 % (ImageNet)": _fmt(published["top1"] if published is not None else None),
                "paper params (M)": _fmt(published["params_m"] if published is not None else None),
                "paper GFLOPs (224²)": _fmt(published["flops_g"] if published is not None else None),
                "paper recipe": published["recipe"] if published is not None else "-",
            }
        )
    return pd.DataFrame(rows)


def _ranking(collection: Collection) -> list[str]:
    """For every grid that sweeps the model: at each depth, the own order of the families vs the paper's."""
    paper = paper_table().dropna(subset=["registry_name"])
    lines = []
    for grid, axes in collection.axes.items():
        if "model" not in axes:
            continue
        runs = collection.runs_of(grid)
        if runs.empty:
            continue
        for depth, own in aggregate(runs).groupby("depth"):
            own = own.groupby("family")["top1_mean"].max()  # the best variant of each family
            if len(own) < 2:
                continue
            published = paper[(paper["depth"] == depth) & paper["family"].isin(own.index)]
            published = published.groupby("family")["top1"].max()
            own_order = " > ".join(f"{f} {v:.2f}" for f, v in own.sort_values(ascending=False).items())
            paper_order = " > ".join(f"{f} {v:.2f}" for f, v in published.sort_values(ascending=False).items())
            lines.append(
                f"- grid `{grid}`, depth {int(depth)}: own (best cell per family) {own_order}; "
                f"paper (ImageNet) {paper_order or '-'}"
            )
    return lines


def _setup_lines(collection: Collection) -> list[str]:
    runs = collection.runs
    datasets = sorted(set(runs["dataset"]))
    noise, pooled = seed_noise(runs)
    seeds = aggregate(runs)["seeds"]
    lines = [
        f"- Runs: {len(runs)} finished, from {', '.join(sorted(set(runs['directory'])))}; "
        f"{collection.summary().split('; ', 1)[1] if 'left out' in collection.summary() else 'none left out'}.",
        f"- Dataset of every own number: {', '.join(datasets)} (test set top-1). "
        + (
            "These are not ImageNet numbers: the published ImageNet numbers appear beside them only to compare "
            "the shape of the results (which operator wins, how accuracy grows with cost)."
            if datasets != ["imagenet"]
            else "The same dataset as the published numbers."
        ),
        f"- Seeds: {int(seeds.min())} to {int(seeds.max())} per cell.",
    ]
    if noise is None:
        lines.append("- Noise of one seed: unknown (no cell has two seeds); differences below ~1 point may be noise.")
    else:
        lines.append(
            f"- Noise of one seed: the standard deviation of top-1 between seeds of one cell is {noise:.2f} points "
            f"(pooled over {pooled} cells)."
        )
    lines.append(
        f"- Comparisons: each grid compares every pair of its cells by the difference of their top-1, with a "
        f"{LEVEL:.0%} Student-t interval, paired by seed (the same seed gives the same training subset, data "
        "order and augmentation) when both cells ran the same seeds, else unpaired (Welch). A cell is called higher "
        "only when that interval excludes 0."
    )
    lines.append(
        "- Speed: the training images/s each run measured while it ran; runs that trained at the same time "
        "(e.g. `--parallel 2`) shared the machine."
    )
    devices = ", ".join(sorted(set(runs["device"].dropna())))
    commits = ", ".join(sorted({str(c)[:12] for c in runs["git_commit"].dropna()}))
    lines.append(f"- Hardware: {devices}; code: commit {commits}.")
    return lines


DETECTION_NOTE = (
    "Detectron2 runs (detection and segmentation grids), one row per cell: mean ± std over seeds of the COCO "
    "metrics (box AP at IoU .50:.95, .50, .75; small/medium/large objects; mask AP) or mIoU, in percent, "
    "with trainable parameters and FLOPs (multiply-adds of one image at the size the figure states, box head on "
    "1000 RoIs and mask head on 100, as the published numbers count them). Each row names the dataset it was "
    "evaluated on; the generated fashion_coco set is not COCO, so its numbers are not comparable with the "
    "published COCO ones (results/paper/coco.csv, cityscapes.csv), which the figures draw beside them."
)


def detection_sections(collection: Collection) -> list[tuple[str, pd.DataFrame, str]]:
    """(grid, its table or an empty one, what is not finished yet) per detection grid."""
    sections = []
    for grid, axes in collection.detection_axes.items():
        runs = collection.detection
        table = detection.grid_table(runs, grid, axes) if not runs.empty else pd.DataFrame()
        counts = collections.Counter(collection.detection_unfinished.get(grid, {}).values())
        sections.append((grid, table, ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))))
    return sections


def write_report(collection: Collection, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    if collection.runs.empty and collection.detection.empty:
        raise ConfigError("no finished runs to report on")
    figures = all_figures(collection, out_dir / "figures")
    title = "Involution study: results"
    classification = not collection.runs.empty
    sections = [("Setup", "\n".join(_setup_lines(collection)))] if classification else []
    for grid, table, comparisons, summary, not_finished in _grid_sections(collection):
        if table is None:
            sections.append((f"Grid `{grid}`", f"No finished run yet ({not_finished})."))
        else:
            later = f"\n\nRuns not in the table: {not_finished}." if not_finished else ""
            compared = f"\n\n{_markdown_table(comparisons)}\n\n{summary}" if summary else ""
            sections.append((f"Grid `{grid}`", _markdown_table(table) + later + compared))
    comparison = paper_comparison(collection)
    ranking = _ranking(collection) if classification else []
    if classification:
        sections.append(
            (
                "Comparison with the published numbers",
                PAPER_NOTE
                + "\n\n"
                + (RANKING_NOTE + "\n" + "\n".join(ranking) + "\n\n" if ranking else "")
                + _markdown_table(comparison),
            )
        )
    for grid, table, not_finished in detection_sections(collection):
        later = f"\n\nRuns not in the table: {not_finished}." if not_finished and not table.empty else ""
        body = _markdown_table(table) + later if not table.empty else f"No finished run yet ({not_finished})."
        sections.append((f"Detection grid `{grid}`", f"{DETECTION_NOTE}\n\n{body}"))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    markdown = [f"# {title}", f"Generated {stamp} by `python -m analysis report`."]
    for heading, body in sections:
        markdown += [f"## {heading}", body]
    markdown.append("## Figures")
    for figure in figures:
        markdown += [f"### {figure.title}", f"![{figure.title}](figures/{figure.png.name})", figure.caption]
    md_path = out_dir / "report.md"
    md_path.write_text("\n\n".join(markdown) + "\n")

    body = [f"<h1>{html.escape(title)}</h1><p>Generated {stamp} by <code>python -m analysis report</code>.</p>"]
    if classification:
        setup = "".join(f"<li>{html.escape(line[2:])}</li>" for line in _setup_lines(collection))
        body.append(f"<h2>Setup</h2><ul>{setup}</ul>")
    for grid, table, comparisons, summary, not_finished in _grid_sections(collection):
        body.append(f"<h2>Grid <code>{html.escape(grid)}</code></h2>")
        if table is None:
            body.append(f"<p>No finished run yet ({html.escape(not_finished)}).</p>")
            continue
        body.append(table.to_html(index=False, border=0))
        if not_finished:
            body.append(f"<p>Runs not in the table: {html.escape(not_finished)}.</p>")
        if summary:
            body.append(comparisons.to_html(index=False, border=0) + f"<p>{html.escape(summary)}</p>")
    if classification:
        body.append(f"<h2>Comparison with the published numbers</h2><p>{html.escape(PAPER_NOTE)}</p>")
        if ranking:
            body.append(f"<p>{html.escape(RANKING_NOTE)}</p><ul>")
            body += [f"<li>{html.escape(line[2:])}</li>" for line in ranking]
            body.append("</ul>")
        body.append(comparison.to_html(index=False, border=0))
    for grid, table, not_finished in detection_sections(collection):
        body.append(f"<h2>Detection grid <code>{html.escape(grid)}</code></h2><p>{html.escape(DETECTION_NOTE)}</p>")
        if table.empty:
            body.append(f"<p>No finished run yet ({html.escape(not_finished)}).</p>")
            continue
        body.append(table.to_html(index=False, border=0))
        if not_finished:
            body.append(f"<p>Runs not in the table: {html.escape(not_finished)}.</p>")
    body.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png.read_bytes()).decode()
        body.append(
            f"<h3>{html.escape(figure.title)}</h3><img alt='{html.escape(figure.title)}' "
            f"src='data:image/png;base64,{data}'><p>{html.escape(figure.caption)}</p>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{padding:3px 8px;border-bottom:1px solid #ddd;"
        "text-align:right}img{max-width:100%}"
    )
    html_path = out_dir / "report.html"
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    return md_path, html_path
