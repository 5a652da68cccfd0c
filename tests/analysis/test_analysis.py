"""collect / plots / report on real run records: a tiny grid trained here, plus broken and unfinished ones."""

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ablations import records
from analysis.__main__ import main
from analysis.collect import aggregate, collect, seed_noise
from slurm import launch

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "results" / "example"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two kernel sizes x two seeds on generated images (seconds), then a truncated record, a failed run and a
    pending one beside them."""
    root = tmp_path_factory.mktemp("study")
    grid = root / "kernel.yaml"
    grid.write_text(
        f"base: {REPO / 'ablations' / 'configs' / 'synthetic.yaml'}\n"
        "axes: {model.options.kernel_size: [3, 5], train.seed: [0, 1]}\n"
    )
    out = root / "runs"
    assert launch.main([str(grid), "--out", str(out), "--executor", "debug", "train.threads=1"]) == 0
    (out / "truncated0000.json").write_text('{"run_id": "truncated0000", "status": "fini')
    failed = records.RunRecord("failed000000", records.FAILED, {}, {"kernel": {}}, error="Traceback\nValueError: boom")
    records.write_record(out, failed)
    records.write_record(out, records.RunRecord("pending00000", records.PENDING, {}, {"kernel": {}}))
    return out


def test_collect_reports_what_it_leaves_out_and_keeps_finished_rows(study, tmp_path, capsys):
    assert main(["collect", str(study), "--out", str(tmp_path / "runs.csv")]) == 0
    err = capsys.readouterr().err
    assert "truncated0000.json: unreadable record" in err
    assert "failed000000.json: failed (ValueError: boom)" in err and "pending00000.json: pending" in err
    assert "4 finished runs; left out: 1 failed, 1 pending, 1 unreadable" in err
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 4 and runs["top1"].notna().all() and set(runs["grids"]) == {"kernel"}
    assert sorted(runs["model.options.kernel_size"]) == [3, 3, 5, 5] and sorted(runs["seed"]) == [0, 0, 1, 1]
    assert {"top5", "params_m", "gflops", "images_per_s", "wall_time_s", "train.seed"} <= set(runs.columns)
    cells = pd.read_csv(tmp_path / "runs_by_cell.csv")
    assert len(cells) == 2 and list(cells["seeds"]) == [2, 2]


def test_aggregate_and_seed_noise_against_hand_computed_values():
    runs = pd.DataFrame(
        {
            "cell": ["a", "a", "b", "b", "b"],
            "run_id": ["a0", "a1", "b0", "b1", "b2"],
            "seed": [0, 1, 0, 1, 2],
            "model": ["rednet26", "rednet26", "resnet26", "resnet26", "resnet26"],
            "top1": [70.0, 72.0, 80.0, 81.0, 85.0],
            "top5": [90.0, 90.0, 95.0, 96.0, 97.0],
            "images_per_s": [100.0, 300.0, 10.0, 20.0, 30.0],
            "wall_time_s": [1.0, 3.0, 5.0, 5.0, 5.0],
            "git_commit": ["x"] * 5,
        }
    )
    cells = aggregate(runs).set_index("cell")
    # a: mean 71, sample std sqrt(((-1)^2 + 1^2) / 1) = sqrt(2); b: mean 82, sqrt((4 + 1 + 9) / 2) = sqrt(7)
    assert cells.loc["a", "top1_mean"] == 71.0 and cells.loc["a", "top1_std"] == pytest.approx(1.41421356)
    assert cells.loc["b", "top1_mean"] == 82.0 and cells.loc["b", "top1_std"] == pytest.approx(2.64575131)
    assert cells.loc["b", "top5_mean"] == 96.0 and cells.loc["b", "top5_std"] == 1.0
    assert list(cells["seeds"]) == [2, 3] and list(cells["model"]) == ["rednet26", "resnet26"]
    assert list(cells["images_per_s"]) == [200.0, 20.0] and list(cells["wall_time_s"]) == [2.0, 5.0]
    # pooled over both cells: (2 + 14) / (1 + 2) degrees of freedom
    noise, pooled = seed_noise(runs)
    assert noise == pytest.approx((16 / 3) ** 0.5) and pooled == 2


def _copy_records(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.json"):
        shutil.copy(path, target / path.name)
    return target


def test_a_run_found_in_two_directories_is_one_row(study, tmp_path, capsys):
    copy = _copy_records(study, tmp_path / "copy")
    collection = collect([study, copy])
    assert len(collection.runs) == 4 and collection.runs["run_id"].is_unique
    assert (collection.runs["directory"] == str(study)).all()
    assert list(aggregate(collection.runs)["seeds"]) == [2, 2]
    # a copy with another result is named, not averaged in
    changed = next(p for p in copy.glob("*.json") if json.loads(p.read_text())["status"] == "finished")
    record = json.loads(changed.read_text())
    record["top1"] += 1.0
    changed.write_text(json.dumps(record))
    assert main(["collect", str(study), str(copy), "--out", str(tmp_path / "runs.csv")]) == 0
    err = capsys.readouterr().err
    assert f"{changed}: conflicts with {study / changed.name} (top-1 " in err
    assert "left out: 1 conflicting copy, 3 duplicate, 2 failed, 2 pending, 2 unreadable" in err
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 4


def _finished(out: Path, grid: str, values: dict, model: dict, top1: float, status=records.FINISHED, curve=None):
    """A record of one run; `curve`: its test top-1 after each epoch (else two epochs that hold none)."""
    config = {"model": model, "data": {"dataset": "synthetic"}, "train": {"seed": values["train.seed"]}}
    depth = int(model["name"][-2:])
    record = records.RunRecord(
        records.run_id(config), status, config, {grid: values}, model=model["name"],
        params=depth * 1000, flops=depth * 10**6, flops_convention="paper, 3x32x32 input",
        top1=top1 if status == records.FINISHED else None, top5=99.0 if status == records.FINISHED else None,
        epochs=[{"top1": v} for v in curve] if curve else [{}, {}], images_per_s=100.0 + top1, wall_time_s=1.0,
    )  # fmt: skip
    existing = records.read_record(out, record.run_id)
    if existing:  # a cell shared by two grids
        record.grids.update(existing.grids)
    records.write_record(out, record)


@pytest.fixture(scope="module")
def mixed_grids(tmp_path_factory):
    """A grid sweeping the model and the kernel size, and one sweeping two variants of one model."""
    out = tmp_path_factory.mktemp("mixed")
    for depth, k, seed in itertools.product((26, 38), (3, 5), (0, 1)):
        model = {"name": f"rednet{depth}", "options": {"kernel_size": k}}
        values = {"model": {"name": f"rednet{depth}"}, "model.options.kernel_size": k, "train.seed": seed}
        _finished(out, "depth_kernel", values, model, 70.0 + depth / 10 + k + seed / 10)
    for k, seed in itertools.product((3, 7), (0, 1)):
        model = {"name": "rednet26", "options": {"kernel_size": k}}
        _finished(out, "variants", {"model": model, "train.seed": seed}, model, 75.0 + k + seed / 10)
    return out


def test_figures_and_tables_of_grids_sweeping_the_model_and_another_axis(mixed_grids, tmp_path):
    assert main(["report", str(mixed_grids), "--out", str(tmp_path)]) == 0
    figures = tmp_path / "figures"
    names = {p.stem for p in figures.glob("*.png")}
    assert {"ablation_depth_kernel_model", "ablation_depth_kernel_kernel_size", "ablation_variants_model"} <= names
    # one line per model in the kernel-size figure, one series per kernel size in the operator figures
    kernel = (figures / "ablation_depth_kernel_kernel_size.svg").read_text()
    assert "RedNet (involution) rednet26" in kernel and "RedNet (involution) rednet38" in kernel
    operators = (figures / "ablation_depth_kernel_model.svg").read_text()
    assert "RedNet (involution) K=3" in operators and "RedNet (involution) K=5" in operators
    variants = (figures / "ablation_variants_model.svg").read_text()
    assert "RedNet (involution) kernel_size=3" in variants and "RedNet (involution) kernel_size=7" in variants
    table = (tmp_path / "report.md").read_text().split("## Grid `variants`")[1].split("## ")[0]
    assert "| rednet26 kernel_size=3 |" in table and "| rednet26 kernel_size=7 |" in table


def test_report_lists_a_grid_with_no_finished_run_and_draws_the_rest(study, tmp_path):
    runs = _copy_records(study, tmp_path / "runs")
    for seed in (0, 1):
        model = {"name": "resnet26", "options": {"width": 8}}
        _finished(runs, "queued", {"model.options.width": 8, "train.seed": seed}, model, 0.0, records.PENDING)
    assert main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Grid `queued`\n\nNo finished run yet (2 pending)." in markdown
    assert "Runs not in the table: 1 failed, 1 pending." in markdown.split("## Grid `kernel`")[1].split("## ")[0]
    assert (tmp_path / "report" / "figures" / "ablation_kernel_kernel_size.png").exists()


def test_plots_with_no_finished_run_yet_draw_the_published_figures(tmp_path):
    queued = tmp_path / "queued"
    for seed in (0, 1):
        model = {"name": "resnet26", "options": {}}
        _finished(queued, "queued", {"train.seed": seed}, model, 0.0, records.PENDING)
    assert main(["plots", str(queued), "--out", str(tmp_path / "figures")]) == 0
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == {"top1_vs_flops", "top1_vs_params"}


def test_the_committed_example_redraws_on_a_fresh_clone(tmp_path):
    assert main(["plots", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    figures = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert len(figures) >= 5, figures
    assert {"top1_vs_flops", "top1_vs_params", "speed", "ablation_operator_model"} <= set(figures)
    assert [p for p in EXAMPLE.iterdir() if p.suffix != ".json"] == [], "records only"


def test_cli_bad_input_is_one_line(tmp_path):
    command = [sys.executable, "-m", "analysis", "plots", str(tmp_path / "missing"), "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"analysis: error: no results directory {tmp_path}/missing"


def test_report_compares_the_cells_of_a_grid_with_intervals_and_calls_only_what_they_exclude(tmp_path):
    """And says whether the order of the cells changed between the last two epochs."""
    top1 = {"resnet26": (85.0, 86.0, 84.5), "rednet26": (84.0, 84.5, 84.0), "sasa26": (82.0, 83.0, 81.0)}
    for name, values in top1.items():
        for seed, value in enumerate(values):
            model = {"name": name, "options": {}}
            values = {"model": model, "train.seed": seed}
            _finished(tmp_path / "runs", "ops", values, model, value, curve=(value - 2, value))
    for k, seeds in ((3, (0, 1, 2)), (7, (3, 4))):  # seeds that do not pair
        for seed in seeds:
            model = {"name": "rednet26", "options": {"kernel_size": k}}
            values = {"model.options.kernel_size": k, "train.seed": seed}
            _finished(
                tmp_path / "runs", "kernel", values, model, 80.0 + k + seed / 2, curve=(90 - k, 80.0 + k + seed / 2)
            )
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    ops = markdown.split("## Grid `ops`")[1].split("## ")[0]
    assert "| model | params (M) | MFLOPs | top-1 % (mean ± std, seeds) |" in ops
    # differences 1.0, 1.5, 0.5: 1.00 +- t(0.975, 2) 0.5 / sqrt(3) = [-0.24, +2.24]
    assert "| resnet26 − rednet26 | +1.00 | [-0.24, +2.24] | paired by seed, 3 pairs, Student t with 2 df |" in ops
    assert "| resnet26 − sasa26 | +3.17 | [+2.45, +3.88] |" in ops  # differences 3.0, 3.0, 3.5
    assert (
        "Called at 95%: resnet26 is higher than sasa26; rednet26 is higher than sasa26. "
        "resnet26 and rednet26 are not distinguishable with 3 seeds." in ops
    )
    assert (
        "Mean test top-1 after epoch 1: resnet26 83.17 > rednet26 82.17 > sasa26 80.00; after epoch 2: "
        "resnet26 85.17 > rednet26 84.17 > sasa26 82.00 (the same order)." in ops
    )
    kernel = markdown.split("## Grid `kernel`")[1].split("## ")[0]
    # Welch: variances 0.25 / 3 and 0.125 / 2 -> df = 0.1458^2 / (0.0833^2 / 2 + 0.0625^2 / 1) = 2.88
    assert "| rednet26 K=7 − rednet26 K=3 | +5.25 |" in kernel and "unpaired (Welch), Student t with 2.88 df" in kernel
    assert (
        "after epoch 1: rednet26 K=3 87.00 > rednet26 K=7 83.00; after epoch 2: rednet26 K=7 88.75 > "
        "rednet26 K=3 83.50 (the order changed: train longer before reading it)." in kernel
    )
    html = (tmp_path / "report" / "report.html").read_text()
    assert "resnet26 and rednet26 are not distinguishable with 3 seeds" in html
