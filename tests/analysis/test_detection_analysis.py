"""Detectron2 run records in collect / report / plots: their own table per grid (mean ± std over seeds), box and
mask AP vs GFLOPs beside the published COCO points, and classification runs read as before."""

from pathlib import Path

import pandas as pd
import pytest

from ablations import records
from analysis.__main__ import main
from analysis.collect import collect
from analysis.detection import aggregate, grid_table


def detectron2_config(backbone: str, seed: int, neck=False, dataset="fashion_coco_val") -> dict:
    """The keys of a resolved Detectron2 config that the analysis reads."""
    return {
        "kind": "detectron2",
        "source": {"config_file": "detectron2_ext/configs/fashion_coco/mask_rcnn_red50_fpn.yaml", "opts": {}},
        "detectron2": {
            "MODEL": {
                "META_ARCHITECTURE": "GeneralizedRCNN",
                "MASK_ON": True,
                "REDNET": {"NAME": backbone},
                "RPN": {"HEAD_NAME": "StandardRPNHead"},
                "ROI_MASK_HEAD": {"NAME": "MaskRCNNConvUpsampleHead"},
                "INVOLUTION": {"NECK": neck},
            },
            "DATASETS": {"TEST": [dataset]},
            "SEED": seed,
        },
    }


def write_run(out, grid: str, backbone: str, seed: int, box_ap: float, status=records.FINISHED, **fields):
    config = detectron2_config(backbone, seed)
    run = records.run_id(config)
    values = {"MODEL.REDNET.NAME": backbone, "SEED": seed}
    record = records.RunRecord(run, status, config, {grid: values}, model=f"Mask R-CNN {backbone}")
    if status == records.FINISHED:
        record.box_ap, record.mask_ap, record.iterations = box_ap, box_ap - 1, 120
        record.params, record.flops, record.images_per_s = 34_000_000, 63_000_000_000, 0.5
        record.flops_convention = "paper (multiply-adds), 3x128x128, box head on 1000 RoIs, mask head on 100"
    for key, value in fields.items():
        setattr(record, key, value)
    records.write_record(out, record)
    return run


@pytest.fixture
def detection_runs(tmp_path):
    out = tmp_path / "runs"
    for seed, (red, res) in enumerate([(4.0, 3.0), (6.0, 3.5)]):
        write_run(out, "det", "rednet50", seed, red)
        write_run(out, "det", "resnet50", seed, res)
    write_run(out, "queued", "rednet26", 0, 0.0, records.PENDING)
    return out


def test_detection_runs_get_their_own_table_with_seed_statistics(detection_runs):
    collection = collect([detection_runs])
    assert collection.runs.empty and len(collection.detection) == 4
    assert collection.detection_axes == {"det": ["MODEL.REDNET.NAME", "SEED"], "queued": ["MODEL.REDNET.NAME", "SEED"]}
    assert collection.detection_unfinished == {"queued": {records.run_id(detectron2_config("rednet26", 0)): "pending"}}
    cells = aggregate(collection.detection).set_index("backbone")
    assert cells.loc["RedNet-50", "box_ap_mean"] == 5.0
    assert cells.loc["RedNet-50", "box_ap_std"] == pytest.approx(2**0.5)  # sample std of 4 and 6
    assert cells.loc["ResNet-50", "seeds"] == 2 and cells.loc["ResNet-50", "gflops"] == 63.0
    table = grid_table(collection.detection, "det", collection.detection_axes["det"])
    assert list(table["MODEL.REDNET.NAME"]) == ["rednet50", "resnet50"]
    assert list(table["box AP"]) == ["5.00 ± 1.41", "3.25 ± 0.35"]
    assert list(table["mask AP"]) == ["4.00 ± 1.41", "2.25 ± 0.35"]
    assert "mIoU" not in table and set(table["dataset"]) == {"fashion_coco_val (generated, not COCO)"}


def test_report_and_plots_show_detection_beside_the_published_coco_points(detection_runs, tmp_path, capsys):
    assert main(["report", str(detection_runs), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    grid = markdown.split("## Detection grid `det`")[1].split("## ")[0]
    assert "fashion_coco set is not COCO" in grid and "| 5.00 ± 1.41 |" in grid
    assert "## Detection grid `queued`" in markdown and "No finished run yet (1 pending)." in markdown
    figures = {p.stem for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert figures == {"box_ap_vs_flops", "mask_ap_vs_flops", "top1_vs_flops", "top1_vs_params"}
    assert "Published COCO val2017 (1280x800) numbers" in markdown and "Detectron2 runs" in capsys.readouterr().err
    assert main(["collect", str(detection_runs), "--out", str(tmp_path / "runs.csv")]) == 0
    detection = pd.read_csv(tmp_path / "runs_detection.csv")
    assert sorted(detection["box_ap"]) == [3.0, 3.5, 4.0, 6.0]


def test_a_finished_detection_run_is_not_a_classification_run(tmp_path):
    out = tmp_path / "runs"
    write_run(out, "det", "rednet50", 0, 4.0)
    collection = collect([out])
    assert (
        collection.skipped == []
        and collection.axes == {}
        and collection.summary() == ("0 finished runs and 1 finished Detectron2 runs")
    )


def test_the_committed_example_reports_its_detection_grid_beside_coco(tmp_path):
    example = Path(__file__).resolve().parents[2] / "results" / "example"
    assert main(["report", str(example), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    grid = markdown.split("## Detection grid `fashion_coco`")[1].split("## ")[0]
    assert grid.count("fashion_coco_val (generated, not COCO)") == 2 and "| 2 |" in grid  # two cells, two seeds
    assert {"box_ap_vs_flops", "mask_ap_vs_flops"} <= {p.stem for p in (tmp_path / "figures").glob("*.png")}
