"""What the launching process checks before a training process starts or a job is queued: the datasets a config
names are registered and their files are there, the model has as many classes as they have, and the backbone
builds (and takes its ImageNet checkpoint). Each problem is one ConfigError naming it."""

import difflib
from functools import reduce
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec

from ablations.config import ConfigError

from .backbone import build_rednet_backbone

# Metadata of Detectron2's registrations and ours that names a file or folder the dataset's loader reads.
DATASET_PATHS = ("json_file", "image_root", "sem_seg_root", "image_dir", "gt_dir")
# Meta-architecture: its number-of-classes key, and the metadata listing a dataset's classes.
CLASS_KEYS = {
    "GeneralizedRCNN": ("MODEL.ROI_HEADS.NUM_CLASSES", "thing_classes"),
    "RetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "thing_classes"),
    "SemanticSegmentor": ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"),
}
REDNET_BACKBONES = ("build_rednet_fpn_backbone", "build_rednet_retinanet_fpn_backbone")


def check(cfg, eval_only: bool = False) -> None:
    """Everything below; an evaluation alone needs none of the DATASETS.TRAIN datasets."""
    splits = ("TEST",) if eval_only else ("TRAIN", "TEST")
    check_datasets(cfg, splits)
    check_num_classes(cfg, splits)
    check_backbone(cfg)


def named_datasets(cfg, splits) -> list[tuple[str, str]]:
    return [(f"DATASETS.{split}", name) for split in splits for name in cfg.DATASETS[split]]


def check_datasets(cfg, splits=("TRAIN", "TEST")) -> None:
    registered = DatasetCatalog.list()
    for key, name in named_datasets(cfg, splits):
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(
                f"{key}: no dataset named {name!r} is registered ({hint}--dataset-dir DIR registers a COCO-format "
                "folder's splits as <folder name>_<split>)"
            )
        metadata = MetadataCatalog.get(name)
        for field in DATASET_PATHS:
            path = metadata.get(field, None)
            if path and not Path(path).exists():
                raise ConfigError(
                    f"{key}: {name} reads {path} ({field}), which does not exist (Detectron2's own datasets are "
                    "looked for under $DETECTRON2_DATASETS, default ./datasets)"
                )


def check_num_classes(cfg, splits=("TRAIN", "TEST")) -> None:
    if cfg.MODEL.META_ARCHITECTURE not in CLASS_KEYS:
        return
    key, classes_field = CLASS_KEYS[cfg.MODEL.META_ARCHITECTURE]
    num_classes = reduce(getattr, key.split("."), cfg)
    for _, name in named_datasets(cfg, splits):
        classes = MetadataCatalog.get(name).get(classes_field, None)
        if classes is not None and len(classes) != num_classes:
            listed = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
            raise ConfigError(
                f"{key} is {num_classes} but {name} has {len(classes)} classes ({listed}): set {key} {len(classes)}"
            )


def check_backbone(cfg) -> None:
    """Build the RedNet bottom-up network as the training processes will, loading MODEL.REDNET.PRETRAINED: a
    classification checkpoint (K=3 stem) for a K=7 stem, a missing or mismatched file fail here."""
    if cfg.MODEL.BACKBONE.NAME not in REDNET_BACKBONES:
        return
    try:
        build_rednet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    except ValueError as error:
        raise ConfigError("; ".join(line.strip() for line in str(error).splitlines() if line.strip())) from None
