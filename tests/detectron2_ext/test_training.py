"""A few iterations of each detector kind (with the involution neck and heads) lower the loss on a fixed batch
of the generated data, and evaluation scores the ground truth as perfect."""

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, build_detection_train_loader  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from PIL import Image  # noqa: E402

from detectron2_ext import datasets  # noqa: E402
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
    "INPUT.CROP.ENABLED", "False", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
    "DATASETS.TRAIN", '("tiny_coco_sem_seg_train",)', "DATASETS.TEST", '("tiny_coco_sem_seg_val",)',
]  # fmt: skip


def small_config(name: str):
    opts = SMALL + (SEMANTIC if name.startswith("semantic") else [])
    return load_config(CONFIG_DIR / f"{name}.yaml", opts)


def first_batch(cfg):
    np.random.seed(0)  # Detectron2's training sampler draws its seed from NumPy: the same batch every run
    return next(iter(build_detection_train_loader(cfg)))


# The Mask R-CNN with the involution mask head is not among them: from a random initialisation its four stacked
# involutions give mask logits large enough that the loss jumps between steps at any learning rate tried
# (0.01 to 0.001, with or without momentum); it is trained with warm-up and clipping from ImageNet weights.
@pytest.mark.parametrize(
    "name",
    ["faster_rcnn_red50_neck_fpn_head_1x", "mask_rcnn_red50_neck_fpn_1x", "retinanet_red50_neck_fpn_1x",
     "semantic_fpn_red50_neck"],
)  # fmt: skip
def test_a_few_iterations_lower_the_loss(tiny_coco, name):
    cfg = small_config(name)
    model = build_model(cfg).train()
    batch = first_batch(cfg)
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


def test_involution_mask_head_trains_end_to_end(tiny_coco):
    """One step of the Mask R-CNN with the involution neck and heads: finite losses, and every parameter of
    the involution mask head receives a gradient."""
    cfg = small_config("mask_rcnn_red50_neck_fpn_head_1x")
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(first_batch(cfg))
    assert {"loss_mask", "loss_rpn_cls", "loss_box_reg"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    head = model.roi_heads.mask_head
    assert type(head).__name__ == "InvolutionMaskHead"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters() if p.requires_grad)


class GroundTruth(torch.nn.Module):
    """A "model" that predicts a dataset's ground truth: instances (boxes, classes, masks) or label maps."""

    def __init__(self, dataset_name: str):
        super().__init__()
        self.records = {record["file_name"]: record for record in DatasetCatalog.get(dataset_name)}

    def forward(self, inputs: list[dict]) -> list[dict]:
        return [self.predict(self.records[image["file_name"]]) for image in inputs]

    def predict(self, record: dict) -> dict:
        size = (record["height"], record["width"])
        if "sem_seg_file_name" in record:
            labels = torch.as_tensor(np.asarray(Image.open(record["sem_seg_file_name"])), dtype=torch.long)
            return {"sem_seg": torch.nn.functional.one_hot(labels, len(datasets.FASHION_CLASSES) + 1).permute(2, 0, 1)}
        annotations = record["annotations"]
        instances = Instances(size)
        instances.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                                   for a in annotations], dtype=torch.float))  # fmt: skip
        instances.pred_classes = torch.tensor([a["category_id"] for a in annotations])
        instances.scores = torch.ones(len(annotations))
        instances.pred_masks = torch.stack(
            [torch.from_numpy(polygons_to_bitmask(a["segmentation"], *size)) for a in annotations]
        )
        return {"instances": instances}


def test_evaluation_gives_perfect_ap_for_the_ground_truth(tiny_coco, tmp_path):
    """Predictions equal to the annotations score box and mask AP 100; a class off by one scores far less."""
    cfg = small_config("mask_rcnn_red50_fpn_1x")
    cfg.OUTPUT_DIR = str(tmp_path)
    model = GroundTruth("tiny_coco_val")
    results = Trainer.test(cfg, model)
    assert results["bbox"]["AP"] == pytest.approx(100) and results["segm"]["AP"] == pytest.approx(100)
    for record in model.records.values():
        for annotation in record["annotations"]:
            annotation["category_id"] = (annotation["category_id"] + 1) % len(datasets.FASHION_CLASSES)
    assert Trainer.test(cfg, model)["bbox"]["AP"] < 50


def test_evaluation_gives_perfect_miou_for_the_ground_truth(tiny_coco, tmp_path):
    cfg = small_config("semantic_fpn_red50")
    cfg.OUTPUT_DIR = str(tmp_path)
    assert Trainer.test(cfg, GroundTruth("tiny_coco_sem_seg_val"))["sem_seg"]["mIoU"] == pytest.approx(100)
