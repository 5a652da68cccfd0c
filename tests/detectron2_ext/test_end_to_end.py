"""End to end: Mask R-CNN on RedNet-50-FPN trained from scratch on the generated set with train_net, then
evaluated from its final checkpoint with --eval-only, reaches a box AP clearly above zero."""

import time

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

from detectron2_ext import train_net  # noqa: E402
from detectron2_ext.config import CONFIG_DIR  # noqa: E402

ITERATIONS = "ITERATIONS_TBD"
MIN_BOX_AP = "MIN_BOX_AP_TBD"


@pytest.mark.slow
def test_mask_rcnn_rednet50_learns_the_generated_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    config = str(CONFIG_DIR / "fashion_coco" / "mask_rcnn_red50_fpn.yaml")
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", str(ITERATIONS)]
    parser = train_net.get_args_parser()
    start = time.monotonic()
    train_net.main(parser.parse_args(["--config-file", config, *opts, "DATASETS.TEST", "()"]))  # no evaluation here
    weights = ["MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth")]
    results = train_net.main(parser.parse_args(["--config-file", config, "--eval-only", *opts, *weights]))
    print(
        f"box AP {results['bbox']['AP']:.2f}, mask AP {results['segm']['AP']:.2f} in {time.monotonic() - start:.0f} s"
    )
    assert results["bbox"]["AP"] > MIN_BOX_AP
