"""Detection grids in the run store: a grid whose base is a Detectron2 config expands (checked in the launching
process) into runs with stable ids, slurm.launch trains them through detectron2_ext.run, and each writes a run
record with its box/mask AP, parameters, FLOPs and speed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

from ablations import records  # noqa: E402
from ablations.config import ConfigError, to_dict  # noqa: E402
from ablations.grid import expand, load_grid  # noqa: E402
from detectron2_ext.config import CONFIG_DIR  # noqa: E402
from slurm import launch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BASE = CONFIG_DIR / "fashion_coco" / "mask_rcnn_red50_fpn.yaml"
TINY = {
    "MODEL.REDNET.NAME": "rednet26",
    "DATASETS.TRAIN": ["tiny_coco_train"],
    "DATASETS.TEST": ["tiny_coco_val"],
    "SOLVER.IMS_PER_BATCH": 2,
    "SOLVER.MAX_ITER": 2,
    "SOLVER.WARMUP_ITERS": 1,
    "SOLVER.CHECKPOINT_PERIOD": 100,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
}


def write_grid(path: Path, axes: dict, settings=TINY, **spec) -> Path:
    grid = {"kind": "detectron2", "base": str(BASE), "set": settings, "axes": axes, **spec}
    path.write_text(json.dumps(grid))  # JSON is YAML
    return path


def test_cells_resolve_to_stable_ids_that_leave_out_where_and_how_a_run_trains(tiny_coco, tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.yaml", {"MODEL.INVOLUTION.NECK": [False, True], "SEED": [0, 1]}))
    cells = expand(grid)
    assert [cell.values for cell in cells][:2] == [
        {"MODEL.INVOLUTION.NECK": False, "SEED": 0},
        {"MODEL.INVOLUTION.NECK": False, "SEED": 1},
    ]
    assert len({cell.run_id for cell in cells}) == 4
    first = cells[0].config
    assert first.detectron2["SEED"] == 0 and first.detectron2["MODEL"]["REDNET"]["NAME"] == "rednet26"
    assert first.source["config_file"] == "detectron2_ext/configs/fashion_coco/mask_rcnn_red50_fpn.yaml"
    again = expand(grid, ["OUTPUT_DIR=elsewhere", "DATALOADER.NUM_WORKERS=2", "MODEL.DEVICE=cuda"])
    assert [cell.run_id for cell in again] == [cell.run_id for cell in cells]
    assert expand(grid, ["SOLVER.BASE_LR=0.01"])[0].run_id != cells[0].run_id
    assert records.run_id(to_dict(first)) == cells[0].run_id


def test_a_grid_sweeps_the_base_config(tiny_coco, tmp_path):
    neck = CONFIG_DIR / "fashion_coco" / "mask_rcnn_red50_neck_fpn_head.yaml"
    cells = expand(load_grid(write_grid(tmp_path / "g.yaml", {"base": [str(BASE), str(neck)], "SEED": [0]})))
    assert [cell.config.source["config_file"].split("/")[-1] for cell in cells] == [BASE.name, neck.name]
    assert cells[1].config.detectron2["MODEL"]["INVOLUTION"]["NECK"] is True


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"MODEL.ROI_HEADS.NUM_CLASSES": [3]}, "MODEL.ROI_HEADS.NUM_CLASSES"),
        ({"MODEL.NO_SUCH_KEY": [1]}, "MODEL.NO_SUCH_KEY"),
        ({"SEED": [-1]}, "a grid's runs need a fixed SEED"),
    ],
)
def test_a_bad_cell_fails_in_the_launcher_before_any_job(tiny_coco, tmp_path, axes, message):
    grid = write_grid(tmp_path / "bad.yaml", axes)
    with pytest.raises(ConfigError, match=f"bad.yaml: cell .*{message}"):
        launch.main([str(grid), "--out", str(tmp_path / "out"), "--executor", "debug"])
    assert not (tmp_path / "out").exists()


def test_a_classification_grid_does_not_sweep_a_base(tmp_path):
    base = REPO / "ablations" / "configs" / "synthetic.yaml"
    (tmp_path / "g.yaml").write_text(json.dumps({"base": str(base), "axes": {"base": [str(base)]}}))
    with pytest.raises(ConfigError, match="only a detection grid"):
        load_grid(tmp_path / "g.yaml")


def test_slurm_launch_trains_a_detection_grid_into_run_records(tiny_coco, tmp_path, capsys):
    out = tmp_path / "out"
    # 4 iterations: Detectron2 times the steps after its first 3
    grid = write_grid(tmp_path / "det.yaml", {"SEED": [0]}, {**TINY, "SOLVER.MAX_ITER": 4})
    assert launch.main([str(grid), "--out", str(out), "--executor", "debug"]) == 0
    [run] = [cell.run_id for cell in expand(load_grid(grid))]
    record = records.read_record(out, run)
    assert record.status == records.FINISHED, record.error
    assert record.grids == {"det": {"SEED": 0}}
    assert record.model == "Mask R-CNN RedNet-26, conv neck, conv head"
    assert record.iterations == 4
    for metric in ("box_ap", "box_ap50", "box_ap75", "mask_ap"):
        assert 0 <= getattr(record, metric) <= 100, metric
    assert record.miou is None and record.top1 is None
    assert record.params > 1e6 and record.flops > 1e9 and record.images_per_s > 0 and record.wall_time_s > 0
    assert record.flops_convention.startswith("paper (multiply-adds), 3x128x128, box head on 1000 RoIs")
    assert (records.checkpoint_dir(out, run) / "detectron2" / "model_final.pth").exists()
    assert "box AP" in capsys.readouterr().out  # the launcher's summary
    # Launched again, the finished run is not trained again.
    assert launch.main([str(grid), "--out", str(out), "--executor", "debug", "--dry-run"]) == 0
    assert "0 to submit, 1 finished" in capsys.readouterr().out


def test_launching_and_expanding_classification_grids_does_not_import_detectron2():
    code = (
        "import sys, slurm.launch, ablations.grid, analysis.report; "
        "ablations.grid.expand(ablations.grid.load_grid('ablations/grids/smoke.yaml')); "
        "print(sorted(m for m in sys.modules if m.startswith('detectron2')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["coco_rednet50", "coco_resnet50"])
def test_the_coco_grids_without_coco_fail_naming_the_dataset(name):
    grid = load_grid(REPO / "ablations" / "grids" / "detection" / f"{name}.yaml")
    assert grid.kind == "detectron2" and len(grid.axes["base"]) in (3, 8)
    with pytest.raises(ConfigError, match=f"{name}.yaml: cell .*coco_2017_train"):
        expand(grid)


def test_the_example_grid_gives_the_ids_of_its_committed_records():
    """A change of the id rule, of a config default or of the grid would orphan the committed runs."""
    example = REPO / "results" / "example"
    committed = {
        path.stem for path in example.glob("*.json") if records.load_record(path).config.get("kind") == "detectron2"
    }
    cells = expand(load_grid(REPO / "ablations" / "grids" / "detection" / "fashion_coco.yaml"))
    assert {cell.run_id for cell in cells} == committed and len(committed) == 4
    for cell in cells:
        assert records.read_record(example, cell.run_id).config == to_dict(cell.config)
