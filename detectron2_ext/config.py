"""The config keys this project adds to Detectron2's (everything else is Detectron2's own)."""

from pathlib import Path
from typing import Sequence, Union

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from ablations.config import ConfigError


def add_involution_config(cfg: CN) -> None:
    """Add the RedNet backbone, involution neck/head and poly-schedule keys, with their defaults."""
    cfg.MODEL.REDNET = CN()
    # The bottom-up network, any model of involution.models: rednet26/38/50/101/152, or resnet26..152 for the
    # convolution baselines in the same skeleton and recipe.
    cfg.MODEL.REDNET.NAME = "rednet50"
    # Kernel size of the stem's involution: 7 in the paper's detection/segmentation backbones, 3 in its ImageNet
    # classifiers (ignored by resnet*).
    cfg.MODEL.REDNET.STEM_KERNEL_SIZE = 7
    # Stages the backbone returns (res2..res5, strides 4..32). MODEL.BACKBONE.FREEZE_AT freezes the stem (1) and
    # the stages up to res<FREEZE_AT> (2 = stem and res2, the paper's recipe).
    cfg.MODEL.REDNET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # BatchNorm layers of the backbone: "BN", or "SyncBN" to share batch statistics across GPUs.
    cfg.MODEL.REDNET.NORM = "BN"
    # Keep the backbone's BatchNorm statistics frozen while training (the affine weights still learn): the paper's
    # detection recipe. False trains them too (segmentation with SyncBN, or training from scratch).
    cfg.MODEL.REDNET.NORM_EVAL = True
    # ImageNet checkpoint of the bottom-up network (this repository's, or an official RedNet/detection one),
    # loaded through involution.checkpoint when the model is built; "" starts from random weights.
    # MODEL.WEIGHTS still loads whole-detector checkpoints on top.
    cfg.MODEL.REDNET.PRETRAINED = ""

    cfg.MODEL.INVOLUTION = CN()
    # The involution neck: the FPN's 3x3 output convolutions become involutions (P6/P7 stay as they are).
    # The involution heads are chosen by name: MODEL.RPN.HEAD_NAME "InvolutionRPNHead",
    # MODEL.ROI_MASK_HEAD.NAME "InvolutionMaskHead".
    cfg.MODEL.INVOLUTION.NECK = False
    # Every involution of the neck and heads: kernel size, channels per kernel group, kernel-generation reduction.
    cfg.MODEL.INVOLUTION.KERNEL_SIZE = 7
    cfg.MODEL.INVOLUTION.GROUP_CHANNELS = 16
    cfg.MODEL.INVOLUTION.REDUCTION_RATIO = 4

    # Semantic FPN's recipe (mmseg's): channel dropout before the classifier of MODEL.SEM_SEG_HEAD.NAME
    # "MMSegFPNHead"; crops (taken after resizing) redrawn, up to 10 times, while one category covers more
    # than this fraction of the labelled pixels; mmseg's photometric distortion (brightness, contrast, saturation,
    # hue).
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.0
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.PHOTOMETRIC_DISTORTION = False

    # (SOLVER.CLIP_GRADIENTS.CLIP_TYPE also takes "full_model": clip by the norm of all gradients together, as the
    # paper's involution configs do, rather than per parameter.)
    # SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR" (the paper's segmentation schedule): after the warm-up the learning
    # rate falls as (1 - iter / MAX_ITER) ** POLY_LR_POWER from BASE_LR to POLY_LR_MIN.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_MIN = 1e-4


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def load_config(config_file: Union[str, Path], opts: Sequence[str] = ()) -> CN:
    """Detectron2's defaults + ours, then the YAML file (with its _BASE_ chain), then ``KEY VALUE`` overrides.
    A missing file, a key that exists in neither or a value of the wrong type fails with a ConfigError naming it."""
    if not Path(config_file).is_file():
        raise ConfigError(f"--config-file: no such file {config_file}")
    cfg = get_cfg()
    add_involution_config(cfg)
    try:
        cfg.merge_from_file(str(config_file))
        cfg.merge_from_list(list(opts))
    except KeyError as error:  # yacs: "Non-existent config key: ..."
        raise ConfigError(error.args[0] if error.args else str(error)) from None
    except (AssertionError, ValueError, yaml.YAMLError) as error:  # yacs asserts on odd-length lists, bad types
        raise ConfigError(" ".join(str(error).split())) from None
    return cfg
