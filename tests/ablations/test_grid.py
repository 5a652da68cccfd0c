"""Grid files expand into validated cells with stable run ids; finished cells are skipped."""

from pathlib import Path

import pytest

from ablations import grid, records
from ablations.config import ConfigError

GRIDS = Path(__file__).resolve().parents[2] / "ablations" / "grids"
SWEEPS = ["kernel_size", "group_channels", "reduction_ratio", "kernel_generation", "operator", "depth"]


@pytest.mark.parametrize("scale", ["fashion_mnist", "imagenet"])
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_grid_exists_at_both_scales_and_expands(scale, sweep, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    g = grid.load_grid(GRIDS / scale / f"{sweep}.yaml")
    cells = grid.expand(g, [f"data.root={tmp_path}"] if scale == "imagenet" else [])
    assert len(cells) >= 3
    assert len({c.run_id for c in cells}) == len(cells)
    assert {c.config.data.dataset for c in cells} == {scale}


def test_operator_grid_compares_the_three_families_at_matched_depth():
    cells = grid.expand(grid.load_grid(GRIDS / "fashion_mnist" / "operator.yaml"))
    names = [c.config.model.name for c in cells]
    assert names == [f"{family}{depth}" for depth in (26, 38, 50) for family in ("rednet", "resnet", "sasa")]


def test_smoke_grid_ids_are_stable():
    g = grid.load_grid(GRIDS / "smoke.yaml")
    cells = grid.expand(g)
    assert len(cells) == 4 and {c.grid for c in cells} == {"smoke"}
    assert [c.run_id for c in cells] == [c.run_id for c in grid.expand(grid.load_grid(GRIDS / "smoke.yaml"))]
    assert cells[0].values == {"model.options.kernel_size": 3, "optim.lr_per_256": 0.2}


def test_run_ids_hash_only_what_changes_the_result(tmp_path):
    smoke = grid.load_grid(GRIDS / "smoke.yaml")
    ids = [c.run_id for c in grid.expand(smoke)]
    moved = ["data.root=/elsewhere", "data.num_workers=4", "train.threads=1"]
    assert [c.run_id for c in grid.expand(smoke, moved)] == ids
    assert set(records.NON_RESULT_KEYS) == {"data.root", "data.num_workers", "train.threads"}
    for changed in ("train.seed=1", "optim.epochs=3", "data.train_subset=100", "train.channels_last=false"):
        assert not set(c.run_id for c in grid.expand(smoke, [changed])) & set(ids), changed


def test_bad_grids_name_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {GRIDS / 'smoke.yaml'}\naxis: {{}}\n")
    with pytest.raises(ConfigError, match="unknown grid key 'axis'"):
        grid.load_grid(path)
    path.write_text(
        f"base: {GRIDS.parent / 'configs' / 'synthetic.yaml'}\naxes: {{model.options.kernel_size: [3, 4]}}\n"
    )
    with pytest.raises(ConfigError, match=r"cell \{'model.options.kernel_size': 4\}: model: .*kernel_size must be odd"):
        grid.expand(grid.load_grid(path))


def test_cli_lists_cells(tmp_path, capsys):
    grid.main([str(GRIDS / "smoke.yaml"), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "smoke:" in out and "4 cells" in out and out.count("new") == 4
