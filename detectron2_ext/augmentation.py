"""Training augmentations in mmdet/mmseg's order: resize, crop (of the resized image), flip, photometric
distortion. Detectron2's own DatasetMapper crops before resizing; without a crop or photometric distortion the
list is Detectron2's."""

from detectron2.data import DatasetMapper, detection_utils
from detectron2.data import transforms as T


def photometric_distortion() -> list:
    """Brightness, contrast and saturation jitter, each applied with probability 0.5 (mmseg's
    PhotoMetricDistortion, in Detectron2's terms: brightness scaled by 0.75-1.25 where mmseg adds -32..32, i.e.
    25% of a mid-grey pixel; contrast and saturation 0.5-1.5; no hue jitter)."""
    return [
        T.RandomApply(T.RandomBrightness(0.75, 1.25), 0.5),
        T.RandomApply(T.RandomContrast(0.5, 1.5), 0.5),
        T.RandomApply(T.RandomSaturation(0.5, 1.5), 0.5),
    ]


def build_train_augmentation(cfg) -> list:
    augmentations = detection_utils.build_augmentation(cfg, is_train=True)  # resize, then flip
    crop = cfg.INPUT.CROP
    if crop.ENABLED:
        if crop.SINGLE_CATEGORY_MAX_AREA < 1.0:
            cropper = T.RandomCrop_CategoryAreaConstraint(
                crop.TYPE, crop.SIZE, crop.SINGLE_CATEGORY_MAX_AREA, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            )
        else:
            cropper = T.RandomCrop(crop.TYPE, crop.SIZE)
        augmentations.insert(1, cropper)
    if cfg.INPUT.PHOTOMETRIC_DISTORTION:
        if cfg.INPUT.FORMAT != "RGB":
            raise ValueError(f"INPUT.PHOTOMETRIC_DISTORTION needs INPUT.FORMAT 'RGB', got {cfg.INPUT.FORMAT!r}")
        augmentations += photometric_distortion()
    return augmentations


def build_train_mapper(cfg) -> DatasetMapper:
    """Detectron2's DatasetMapper with the augmentations above."""
    return DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentation(cfg))
