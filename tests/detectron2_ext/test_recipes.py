"""The configs' recipes are the official ones (d-li14/involution's det/ and seg/ configs on mmdet's and mmseg's
_base_ files), and the README's table of remaining differences states what the configs hold."""

import ast
import fnmatch
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_backbone  # noqa: E402
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead  # noqa: E402

from detectron2_ext.augmentation import PhotometricDistortion, PhotometricTransform, build_train_augmentation  # noqa: E402
from detectron2_ext.config import CONFIG_DIR, load_config  # noqa: E402
from detectron2_ext.heads import MMSegFPNHead  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
CONFIGS = sorted(
    str(path.relative_to(CONFIG_DIR).with_suffix("")) for path in CONFIG_DIR.rglob("*.yaml") if path.name[0].islower()
)

NO_CLIP = {"SOLVER.CLIP_GRADIENTS.ENABLED": False}


def clip(max_norm: float) -> dict:  # mmcv's grad_clip=dict(max_norm=..., norm_type=2): the whole model's norm
    return {
        "SOLVER.CLIP_GRADIENTS.ENABLED": True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": max_norm,
        "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    }


# mmdet configs/_base_/schedules/schedule_1x.py; mmdet decays every parameter, normalization weights included.
SCHEDULE_1X = {
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 1e-4,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.WARMUP_FACTOR": 0.001,
    "SOLVER.WARMUP_ITERS": 500,
    **NO_CLIP,
}
# d-li14/involution det/configs/_base_/schedules/schedule_1x_warmup.py (and _grad_clip.py: clip 40).
SCHEDULE_1X_WARMUP = {**SCHEDULE_1X, "SOLVER.WARMUP_ITERS": 2000}
# det/configs/_base_/models/retinanet_red50_fpn.py (as mmdet's retinanet_r50_fpn.py): L1Loss; lr 0.01.
RETINANET = {
    "SOLVER.BASE_LR": 0.01,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.0,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
}
# seg/configs/_base_/models/fpn_red50.py; mmseg configs/_base_/datasets/cityscapes.py, schedules/schedule_80k.py.
SEMANTIC_FPN = {
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_MIN": 1e-4,
    "SOLVER.MAX_ITER": 80000,
    "SOLVER.WARMUP_ITERS": 0,
    **NO_CLIP,
    "MODEL.SEM_SEG_HEAD.NAME": "MMSegFPNHead",
    "MODEL.SEM_SEG_HEAD.DROPOUT": 0.1,
    "INPUT.MIN_SIZE_TRAIN": (512, 2048),  # img_scale (2048, 1024) x ratio_range (0.5, 2.0), uniform
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "range",
    "INPUT.CROP.SIZE": (512, 1024),
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75,
    "INPUT.PHOTOMETRIC_DISTORTION": True,
}
OFFICIAL = {
    "faster_rcnn_red50_fpn_1x": SCHEDULE_1X,
    "faster_rcnn_red50_neck_fpn_1x": SCHEDULE_1X_WARMUP,
    "faster_rcnn_red50_neck_fpn_head_1x": {**SCHEDULE_1X_WARMUP, **clip(5.0)},
    "faster_rcnn_r50_fpn_1x": SCHEDULE_1X,
    "mask_rcnn_red50_fpn_1x": SCHEDULE_1X,
    "mask_rcnn_red50_neck_fpn_1x": SCHEDULE_1X_WARMUP,
    "mask_rcnn_red50_neck_fpn_head_1x": {**SCHEDULE_1X_WARMUP, **clip(5.0)},
    "mask_rcnn_r50_fpn_1x": SCHEDULE_1X,
    "retinanet_red50_fpn_1x": {**SCHEDULE_1X_WARMUP, **RETINANET},
    "retinanet_red50_neck_fpn_1x": {**SCHEDULE_1X_WARMUP, **RETINANET, **clip(40.0)},
    "retinanet_r50_fpn_1x": {**SCHEDULE_1X, **RETINANET},
    "semantic_fpn_red50": SEMANTIC_FPN,
    "semantic_fpn_red50_neck": SEMANTIC_FPN,
    "semantic_fpn_r50": SEMANTIC_FPN,
}


def value(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return tuple(cfg) if isinstance(cfg, list) else cfg


def test_every_coco_and_cityscapes_config_has_its_official_recipe_here():
    assert set(OFFICIAL) == {name for name in CONFIGS if not name.startswith("fashion_coco/")}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_recipe_is_the_official_one(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    assert {key: value(cfg, key) for key in OFFICIAL[name]} == OFFICIAL[name]


def readme_differences() -> list:
    """Rows (configs, key, value here) of the README's table of remaining differences."""
    text = README.read_text().split("Remaining differences from the official recipes", 1)[1]
    rows = []
    for line in text.split("\n\n", 2)[1].splitlines()[2:]:
        configs, key, here = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows.append((configs.strip("`"), key.strip("`"), ast.literal_eval(here.strip("`"))))
    return rows


def test_readme_table_of_differences_states_what_the_configs_hold():
    rows = readme_differences()
    assert len(rows) >= 5
    for patterns, key, here in rows:
        names = [name for name in CONFIGS if any(fnmatch.fnmatch(name, p.strip()) for p in patterns.split(","))]
        assert names, f"README row {patterns} {key}: no config matches"
        for name in names:
            held = value(load_config(CONFIG_DIR / f"{name}.yaml"), key)
            assert held == (tuple(here) if isinstance(here, list) else here), (name, key)


def small_cfg(name: str, *opts: str):
    return load_config(CONFIG_DIR / f"{name}.yaml", ["MODEL.DEVICE", "cpu", "MODEL.REDNET.NAME", "rednet26", *opts])


def test_retinanet_p7_is_computed_from_p6_without_relu():
    backbone = build_backbone(small_cfg("retinanet_red50_fpn_1x")).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 128, 128))
        top = backbone.top_block
        assert (features["p6"] < 0).any()
        torch.testing.assert_close(features["p7"], top.p7(features["p6"]))
        assert not torch.allclose(features["p7"], top.p7(features["p6"].relu()))


def test_semantic_head_drops_channels_before_the_classifier_while_training():
    cfg = small_cfg("semantic_fpn_red50", "MODEL.SEM_SEG_HEAD.NORM", "BN")
    shapes = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 6)}
    head = SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, shapes)
    assert isinstance(head, MMSegFPNHead) and head.dropout.p == 0.1
    features = {name: torch.randn(2, 256, 64 // 2**i, 64 // 2**i) for i, name in enumerate(shapes)}
    with torch.no_grad():
        head.eval()
        torch.testing.assert_close(head.layers(features), SemSegFPNHead.layers(head, features))
        head.train()
        head.dropout.p = 0.5
        assert not torch.allclose(head.layers(features), SemSegFPNHead.layers(head, features))


def test_semantic_loss_is_averaged_over_all_pixels_with_ignored_ones_as_zero():
    cfg = small_cfg("semantic_fpn_red50", "MODEL.SEM_SEG_HEAD.NORM", "BN")
    shapes = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 6)}
    head = SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, shapes)
    predictions = torch.randn(2, 19, 8, 8)
    targets = torch.randint(0, 19, (2, 32, 32))
    targets[:, :, :24] = 255  # three quarters ignored
    logits = torch.nn.functional.interpolate(predictions, scale_factor=4, mode="bilinear", align_corners=False)
    summed = torch.nn.functional.cross_entropy(logits, targets, ignore_index=255, reduction="sum")
    torch.testing.assert_close(head.losses(predictions, targets)["loss_sem_seg"], summed / targets.numel())


def test_semantic_fpn_augmentations_in_mmseg_order():
    augmentations = build_train_augmentation(load_config(CONFIG_DIR / "semantic_fpn_red50.yaml"))
    resize, crop, flip, photometric = augmentations
    assert isinstance(resize, T.ResizeShortestEdge) and resize.sample_style == "range"
    assert isinstance(crop, T.RandomCrop_CategoryAreaConstraint)
    assert (crop.single_category_max_area, crop.ignored_category) == (0.75, 255)
    assert isinstance(flip, T.RandomFlip)
    assert isinstance(photometric, PhotometricDistortion)


def test_photometric_distortion_draws_mmsegs_parameters():
    np.random.seed(0)
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    drawn = [PhotometricDistortion().get_transform(image) for _ in range(2000)]
    for name, neutral, low, high in [
        ("brightness", 0.0, -32, 32), ("contrast", 1.0, 0.5, 1.5), ("saturation", 1.0, 0.5, 1.5), ("hue", 0, -18, 17),
    ]:  # fmt: skip
        values = np.array([getattr(t, name) for t in drawn])
        assert 0.45 < np.mean(values != neutral) < 0.55, name  # each step with probability 0.5
        assert low <= values.min() and values.max() <= high and values.min() < low + 2 and values.max() > high - 2
    assert 0.45 < np.mean([t.contrast_first for t in drawn]) < 0.55


def test_photometric_steps_as_mmseg_computes_them():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    shifted = PhotometricTransform(-40.0, 1.3, True, 1.0, 0).apply_image(image)
    expected = np.clip(np.clip(image.astype(np.float32) - 40, 0, 255).astype(np.uint8) * np.float32(1.3), 0, 255)
    np.testing.assert_array_equal(shifted, expected.astype(np.uint8))
    red = np.array([[[255, 0, 0], [200, 100, 100]]], dtype=np.uint8)
    np.testing.assert_array_equal(PhotometricTransform(0.0, 1.0, True, 1.0, 60).apply_image(red)[0, 0], [0, 255, 0])
    grey = PhotometricTransform(0.0, 1.0, True, 0.0, 0).apply_image(red)  # no saturation: each pixel's maximum
    np.testing.assert_array_equal(grey, [[[255, 255, 255], [200, 200, 200]]])
    half = PhotometricTransform(0.0, 1.0, False, 0.5, 0).apply_image(red)  # S 0.5 -> 0.25 at V 200: 150 = 200 * 0.75
    np.testing.assert_array_equal(half[0, 1], [200, 150, 150])


def test_crop_keeps_no_category_above_its_share():
    """20x20 crops of a 20x40 label map (category 0 on its left half, 1 and 2 on quarters): with cat_max_ratio
    0.75 no crop has a category on more than 75% of it; plain random crops (29% of them) do."""
    cfg = load_config(CONFIG_DIR / "semantic_fpn_red50.yaml", ["INPUT.CROP.SIZE", "(20, 20)"])
    constrained = build_train_augmentation(cfg)[1]
    plain = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), single_category_max_area=1.0)
    labels = np.zeros((20, 40), dtype=np.uint8)
    labels[:, 20:] = 1
    labels[:, 30:] = 2
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    np.random.seed(0)

    def largest_share(crop) -> float:
        cropped = crop.get_transform(image, labels).apply_segmentation(labels)
        return np.bincount(cropped.ravel()).max() / cropped.size

    assert max(largest_share(constrained) for _ in range(50)) <= 0.75
    assert max(largest_share(plain) for _ in range(50)) > 0.75


def test_detection_augmentations_are_detectron2s():
    augmentations = build_train_augmentation(load_config(CONFIG_DIR / "mask_rcnn_red50_fpn_1x.yaml"))
    assert [type(a) for a in augmentations] == [T.ResizeShortestEdge, T.RandomFlip]


def test_trainer_batches_go_through_these_augmentations(tiny_coco):
    """train_net's loader: resized to 128-160, 64x96 crops, photometric distortion, on the generated set."""
    from detectron2_ext.train_net import Trainer

    cfg = load_config(
        CONFIG_DIR / "semantic_fpn_red50.yaml",
        ["INPUT.MIN_SIZE_TRAIN", "(128, 160)", "INPUT.CROP.SIZE", "(64, 96)", "SOLVER.IMS_PER_BATCH", "2",
         "DATALOADER.NUM_WORKERS", "0", "DATASETS.TRAIN", '("tiny_coco_sem_seg_train",)'],
    )  # fmt: skip
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert [tuple(item["image"].shape) for item in batch] == [(3, 64, 96)] * 2
    assert [tuple(item["sem_seg"].shape) for item in batch] == [(64, 96)] * 2
