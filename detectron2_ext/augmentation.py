"""Training augmentations in mmdet/mmseg's order: resize, crop (of the resized image), flip, photometric
distortion. Detectron2's own DatasetMapper crops before resizing; without a crop or photometric distortion the
list is Detectron2's."""

import numpy as np
from detectron2.data import DatasetMapper, detection_utils
from detectron2.data import transforms as T
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv


class PhotometricTransform(T.Transform):
    """Brightness + ``brightness``, contrast x ``contrast`` (before or after the HSV steps), saturation x
    ``saturation`` and hue + ``hue`` (in OpenCV's 180 steps per turn) of an RGB uint8 image, each step clipped to
    8 bits as mmseg's PhotoMetricDistortion does; neutral values skip their step. Boxes and labels are kept."""

    def __init__(self, brightness: float, contrast: float, contrast_first: bool, saturation: float, hue: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        image = _affine(image, 1.0, self.brightness)
        if self.contrast_first:
            image = _affine(image, self.contrast, 0.0)
        if self.saturation != 1.0 or self.hue:
            hsv = rgb_to_hsv(image / 255.0)
            hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0, 1)
            hsv[..., 0] = (hsv[..., 0] + self.hue / 180) % 1.0
            image = np.clip(np.rint(hsv_to_rgb(hsv) * 255), 0, 255).astype(np.uint8)
        if not self.contrast_first:
            image = _affine(image, self.contrast, 0.0)
        return image

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return T.NoOpTransform()


def _affine(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    if alpha == 1.0 and beta == 0.0:
        return image
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class PhotometricDistortion(T.Augmentation):
    """mmseg's PhotoMetricDistortion (the official Cityscapes pipeline): each step with probability 0.5,
    brightness + U(-32, 32), contrast x U(0.5, 1.5), saturation x U(0.5, 1.5), hue + one of -18..17 (numpy's
    randint(-18, 18)); contrast before or after the HSV steps at random. The HSV steps convert in floating point
    (OpenCV converts in 8 bits: a pixel may differ by a level)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> PhotometricTransform:
        def sometimes(draw, neutral):
            return draw() if np.random.randint(2) else neutral

        delta = self.brightness_delta
        return PhotometricTransform(
            brightness=sometimes(lambda: np.random.uniform(-delta, delta), 0.0),
            contrast=sometimes(lambda: np.random.uniform(*self.contrast_range), 1.0),
            contrast_first=bool(np.random.randint(2)),
            saturation=sometimes(lambda: np.random.uniform(*self.saturation_range), 1.0),
            hue=sometimes(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta)), 0),
        )


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
        augmentations.append(PhotometricDistortion())
    return augmentations


def build_train_mapper(cfg) -> DatasetMapper:
    """Detectron2's DatasetMapper with the augmentations above."""
    return DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentation(cfg))
