"""train_net through the submitit launcher: the job trains, and run again (as after a requeue) resumes from the
last checkpoint."""

import json

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

from detectron2_ext.config import CONFIG_DIR  # noqa: E402
from slurm import detectron2_launch  # noqa: E402


def iterations(out_dir) -> list[int]:
    return [json.loads(line)["iteration"] for line in (out_dir / "metrics.json").read_text().splitlines()]


def test_job_trains_then_resumes_from_its_last_checkpoint(tiny_coco, tmp_path):
    def run(max_iter):
        return detectron2_launch.main([
            "--config-file", str(CONFIG_DIR / "fashion_coco" / "mask_rcnn_red50_fpn.yaml"),
            "--executor", "debug", "--dataset-dir", str(tiny_coco),
            "OUTPUT_DIR", str(tmp_path), "MODEL.REDNET.NAME", "rednet26", "SOLVER.IMS_PER_BATCH", "2",
            "DATASETS.TRAIN", '("tiny_coco_train",)', "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(max_iter),
            "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.WARMUP_ITERS", "1",
        ])  # fmt: skip

    assert run(2) == 0
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert run(4) == 0  # what a requeued job with a longer schedule does: continue at iteration 2
    assert "Starting training from iteration 2" in (tmp_path / "log.txt").read_text()
