"""A few iterations of each detector kind (with the involution neck and heads) lower the loss on a fixed batch
of the generated data, and evaluation returns COCO AP and mIoU."""

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from detectron2_ext.config import CONFIG_DIR, load_config  # noqa: E402
from detectron2_ext.train_net import Trainer  # noqa: E402

SMALL = [
    "MODEL.DEVICE", "cpu", "MODEL.REDNET.NAME", "rednet26", "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.REDNET.NORM_EVAL", "False", "MODEL.ROI_HEADS.NUM_CLASSES", "10", "MODEL.RETINANET.NUM_CLASSES", "10",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
    "DATASETS.TRAIN", '("tiny_coco_train",)', "DATASETS.TEST", '("tiny_coco_val",)', "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip
SEMANTIC = [
    "MODEL.REDNET.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "11",
    "INPUT.CROP.ENABLED", "False", "DATASETS.TRAIN", '("tiny_coco_sem_seg_train",)',
    "DATASETS.TEST", '("tiny_coco_sem_seg_val",)',
]  # fmt: skip


def small_config(name: str):
    opts = SMALL + (SEMANTIC if name.startswith("semantic") else [])
    return load_config(CONFIG_DIR / f"{name}.yaml", opts)


@pytest.mark.parametrize(
    "name",
    ["faster_rcnn_red50_neck_fpn_head_1x", "mask_rcnn_red50_neck_fpn_head_1x", "retinanet_red50_neck_fpn_1x",
     "semantic_fpn_red50_neck"],
)  # fmt: skip
def test_a_few_iterations_lower_the_loss(tiny_coco, name):
    cfg = small_config(name)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
    losses = []
    with EventStorage():
        for _ in range(6):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert min(losses[-2:]) < 0.97 * losses[0], losses


def test_evaluation_returns_box_and_mask_ap(tiny_coco, tmp_path):
    cfg = small_config("mask_rcnn_red50_fpn_1x")
    cfg.OUTPUT_DIR = str(tmp_path)
    results = Trainer.test(cfg, build_model(cfg).eval())
    for task in ("bbox", "segm"):
        assert 0 <= results[task]["AP"] <= 100 and "AP50" in results[task]


def test_evaluation_returns_miou(tiny_coco, tmp_path):
    cfg = small_config("semantic_fpn_red50")
    cfg.OUTPUT_DIR = str(tmp_path)
    results = Trainer.test(cfg, build_model(cfg).eval())
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
