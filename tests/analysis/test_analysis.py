"""collect / plots / report on real run records: a tiny grid trained here, plus broken and unfinished ones."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ablations import records
from analysis.__main__ import main
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
    for _, cell in cells.iterrows():
        tops = runs[runs["model.options.kernel_size"] == cell["model.options.kernel_size"]]["top1"]
        assert cell["top1_mean"] == pytest.approx(tops.mean()) and cell["top1_std"] == pytest.approx(tops.std())


def test_plots_and_report(study, tmp_path):
    assert main(["report", str(study), "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    markdown = (tmp_path / "report.md").read_text()
    assert "src='data:image/png;base64," in html and "src='http" not in html and "src='figures" not in html
    assert "Grid `kernel`" in markdown and "synthetic" in markdown and "These are not ImageNet numbers" in markdown
    assert "Noise of one seed: the standard deviation of top-1 between seeds of one cell is" in markdown
    figures = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["ablation_kernel_kernel_size", "speed", "top1_vs_flops", "top1_vs_params"]
    assert all((tmp_path / "figures" / f"{name}.svg").stat().st_size > 1000 for name in figures)


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
