"""The published numbers: the values checked at their source, every row traceable, one reader for all users."""

import pytest

from analysis.collect import paper_table
from analysis.plots import complexity_figures
from involution.published import published_complexity, published_rows


def test_san_rows_are_the_san_authors_values():
    # github.com/hszhao/SAN README, "Performance" (100 epochs)
    rows = {row["model"]: row for row in published_rows("imagenet")}
    top1 = [rows[f"SAN{d} {kind}"]["top1"] for kind in ("pairwise", "patchwise") for d in (10, 15, 19)]
    assert top1 == [74.9, 76.6, 76.9, 77.1, 78.0, 78.2]
    assert [rows[f"ResNet-{d}"]["top1"] for d in (26, 38, 50)] == [73.6, 76.0, 76.9]
    assert all("github.com/hszhao/SAN" in rows[f"ResNet-{d}"]["source"] for d in (26, 38, 50))
    assert all("100 epochs" in rows[f"ResNet-{d}"]["recipe"] for d in (26, 38, 50))


@pytest.mark.parametrize("table", ["imagenet", "coco", "cityscapes"])
def test_every_published_row_names_an_openable_source_and_its_recipe(table):
    rows = published_rows(table)
    assert rows
    for row in rows:
        assert row["source"].startswith("https://") or "arXiv" in row["source"], row
        assert row["recipe"], row


def test_ambiguous_and_resolution_facts_are_marked():
    mask_rcnn_r50 = next(
        row for row in published_rows("coco") if (row["detector"], row["backbone"]) == ("Mask R-CNN", "ResNet-50")
    )
    assert "AMBIGUOUS" in mask_rcnn_r50["note"]
    assert all("FLOPs at 2048x1024" in row["recipe"] for row in published_rows("cityscapes"))


def test_one_reader_for_the_complexity_table_and_the_analysis():
    assert published_complexity("rednet26") == {"params_m": 9.23, "flops_g": 1.73, "source": published_rows(
        "imagenet")[0]["source"]}  # fmt: skip
    paper = paper_table()
    assert list(paper["top1"]) == [row["top1"] for row in published_rows("imagenet")]
    assert paper.set_index("registry_name").loc["resnet50", ["family", "depth"]].tolist() == ["resnet", 50]


def test_every_published_series_is_named_in_the_figure(tmp_path):
    import pandas as pd

    from analysis.collect import Collection

    complexity_figures(Collection(pd.DataFrame(), {}), tmp_path)
    svg = (tmp_path / "top1_vs_flops.svg").read_text()
    for series in {row["series"] for row in published_rows("imagenet")}:
        assert series.replace("(", "").split()[0] in svg and f">{series}<" in svg.replace("&gt;", ">"), series
