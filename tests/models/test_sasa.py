"""SASA's two published series against its Table 1 (arXiv 1906.05909): ResNet-26/38/50 with local
self-attention in every bottleneck, with the convolution stem ("conv-stem + attention", ``sasaNN``) or the
attention stem ("full attention", ``sasafullNN``)."""

from pathlib import Path

import pytest

from ablations import grid
from involution.complexity import count_flops, count_params, main
from involution.models import build_model

GRIDS = Path(__file__).resolve().parents[2] / "ablations" / "grids"
# Table 1: params (M, one decimal) and FLOPS (B) counting a multiply-add as 2 FLOPs, halved here to the
# multiply-adds this repository counts.
PUBLISHED = {
    "sasa26": (10.3, 4.5 / 2),
    "sasa38": (14.1, 5.7 / 2),
    "sasa50": (18.0, 7.0 / 2),
    "sasafull26": (10.3, 4.7 / 2),
    "sasafull38": (14.1, 6.0 / 2),
    "sasafull50": (18.0, 7.2 / 2),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_params_within_the_published_precision_and_flops_within_10_percent(name):
    params_m, flops_g = PUBLISHED[name]
    model = build_model(name)
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=0.1)
    assert count_flops(model) / 1e9 == pytest.approx(flops_g, rel=0.1)


def test_complexity_table_pairs_each_series_with_its_published_row(capsys):
    main(["--models", "sasa*26"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"sasa26", "sasafull26"}
    assert "10.30 M 2.25 G" in rows["sasa26"] and "10.30 M 2.35 G" in rows["sasafull26"]


def test_imagenet_operator_grid_runs_both_series_at_each_depth(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    cells = grid.expand(grid.load_grid(GRIDS / "imagenet" / "operator.yaml"), [f"data.root={tmp_path}"])
    names = [c.config.model.name for c in cells]
    for depth in (26, 38, 50):
        assert {f"sasa{depth}", f"sasafull{depth}"} <= set(names)
