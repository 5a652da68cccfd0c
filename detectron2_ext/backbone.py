"""RedNet (or, as the baseline, ResNet) from involution.models as a Detectron2 backbone, and the FPN backbones
built on it (conv or involution neck)."""

import logging
import math
import os
from typing import Mapping, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from torch import nn

from involution import build_model
from involution.checkpoint import load_official, read_state_dict, to_model_names

from .neck import InvolutionFPN, involution_args

logger = logging.getLogger(__name__)

STAGES = ("res2", "res3", "res4", "res5")


class RedNetBackbone(Backbone):
    """A registered ``involution.models`` network (stem + four bottleneck stages) returning res2..res5.

    ``freeze_at`` follows Detectron2: 1 freezes the stem, 2 the stem and res2 (the paper's recipe), and so on;
    frozen parts neither learn nor update BatchNorm statistics. ``norm_eval`` keeps every BatchNorm's statistics
    frozen while training (mmdet's norm_eval; the affine weights still learn). Inputs of any size work (odd
    sizes included); detectors pad them to a multiple of 32.
    """

    def __init__(
        self,
        name: str = "rednet50",
        stem_kernel_size: int = 7,
        out_features: Sequence[str] = STAGES,
        freeze_at: int = 2,
        norm: str = "BN",
        norm_eval: bool = True,
    ):
        super().__init__()
        unknown = set(out_features) - set(STAGES)
        if unknown or not out_features:
            raise ValueError(f"MODEL.REDNET.OUT_FEATURES must name stages of {STAGES}, got {list(out_features)}")
        if norm not in ("BN", "SyncBN"):
            raise ValueError(f"MODEL.REDNET.NORM must be 'BN' or 'SyncBN', got {norm!r}")
        options = {"num_classes": 0}
        if name.startswith("rednet"):
            options["stem_kernel_size"] = stem_kernel_size
        self.net = build_model(name, **options)
        if norm == "SyncBN":
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.name, self.norm_eval = name, norm_eval
        self._out_features = list(out_features)
        self._out_feature_channels = {s: info["num_chs"] for s, info in zip(STAGES, self.net.feature_info)}
        self._out_feature_strides = {s: info["reduction"] for s, info in zip(STAGES, self.net.feature_info)}
        self.frozen = ([self.net.stem] if freeze_at >= 1 else []) + self.net.stages[: max(0, freeze_at - 1)]
        for module in self.frozen:
            module.requires_grad_(False)
        self.train()

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4:
            raise ValueError(f"{self.name} backbone takes (N, C, H, W) images, got shape {tuple(x.shape)}")
        features = self.net.forward_stages(x)
        return {stage: feature for stage, feature in zip(STAGES, features) if stage in self._out_features}

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen:
            module.eval()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def load_pretrained(self, path: str) -> None:
        """Load ImageNet weights (this repository's training checkpoints, official RedNet classification or
        detection/segmentation checkpoints, or torchvision ResNet state dicts; the classifier and any neck/heads
        are left out)."""
        state, _ = to_model_names(_read_checkpoint(path))
        state = {name: tensor for name, tensor in state.items() if not name.startswith("head.")}
        self._check_stem(path, state)
        report = load_official(self.net, state)
        logger.info("Loaded backbone weights from %s: %s", path, report)

    def _check_stem(self, path: str, state: Mapping[str, torch.Tensor]) -> None:
        """Name the usual mismatch, a classification checkpoint (K=3 stem) in a detection backbone (K=7)."""
        stem = self.net.stem[1] if self.name.startswith("rednet") else None
        key = next((name for name in state if name.endswith("stem.1.conv2.conv.weight")), None)
        if stem is None or key is None:
            return
        kernel_size = math.isqrt(state[key].shape[0] // stem.groups)
        if kernel_size != stem.kernel_size:
            raise ValueError(
                f"{path}: its stem involution has K={kernel_size} (the ImageNet classifiers' stem) but this "
                f"backbone's has K={stem.kernel_size} (MODEL.REDNET.STEM_KERNEL_SIZE, 7 in the paper's detection "
                f"backbones): set MODEL.REDNET.STEM_KERNEL_SIZE {kernel_size} to use this checkpoint, or give the "
                f"backbone of a K={stem.kernel_size} (detection/segmentation) checkpoint"
            )


def _read_checkpoint(path: str):
    """The tensors of a checkpoint file, read with weights_only=True; this repository's training checkpoints
    hold them under "model" (beside the optimizer state)."""
    if not os.path.isfile(path):
        raise ValueError(f"MODEL.REDNET.PRETRAINED: no such file {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip or weights_only errors: name the file and the reason
        raise ValueError(f"MODEL.REDNET.PRETRAINED: {path} is not a plain-tensor torch checkpoint: {error}") from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    return read_state_dict(checkpoint)


def build_rednet_backbone(cfg, input_shape: ShapeSpec) -> RedNetBackbone:
    if input_shape.channels != 3:
        raise ValueError(f"RedNet backbones take 3-channel images, got {input_shape.channels} (MODEL.PIXEL_MEAN)")
    backbone = RedNetBackbone(
        cfg.MODEL.REDNET.NAME,
        cfg.MODEL.REDNET.STEM_KERNEL_SIZE,
        cfg.MODEL.REDNET.OUT_FEATURES,
        cfg.MODEL.BACKBONE.FREEZE_AT,
        cfg.MODEL.REDNET.NORM,
        cfg.MODEL.REDNET.NORM_EVAL,
    )
    if cfg.MODEL.REDNET.PRETRAINED:
        backbone.load_pretrained(cfg.MODEL.REDNET.PRETRAINED)
    return backbone


def _fpn(cfg, bottom_up: Backbone, top_block: nn.Module) -> FPN:
    """FPN on ``bottom_up`` (MODEL.FPN keys), with involution output layers when MODEL.INVOLUTION.NECK."""
    options = dict(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    missing = set(cfg.MODEL.FPN.IN_FEATURES) - set(bottom_up.output_shape())
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {list(cfg.MODEL.FPN.IN_FEATURES)} are not all in MODEL.REDNET.OUT_FEATURES "
            f"{list(cfg.MODEL.REDNET.OUT_FEATURES)}"
        )
    if cfg.MODEL.INVOLUTION.NECK:
        return InvolutionFPN(**options, involution=involution_args(cfg))
    return FPN(**options)


@BACKBONE_REGISTRY.register()
def build_rednet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RedNet-FPN for two-stage detectors and Semantic FPN: P2-P5 from the FPN and P6 by max pooling."""
    return _fpn(cfg, build_rednet_backbone(cfg, input_shape), LastLevelMaxPool())


class LastLevelP6P7OnInput(LastLevelP6P7):
    """P6 by a 3x3 stride-2 convolution of res5 and P7 by one of P6 itself, without Detectron2's ReLU between
    them: mmdet's FPN with add_extra_convs="on_input" (relu_before_extra_convs False), as the official
    RetinaNet configs build it."""

    def forward(self, c5: torch.Tensor) -> list:
        p6 = self.p6(c5)
        return [p6, self.p7(p6)]


@BACKBONE_REGISTRY.register()
def build_rednet_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RedNet-FPN for RetinaNet: P3-P5 from the FPN, P6/P7 by 3x3 stride-2 convolutions from res5 (mmdet's)."""
    bottom_up = build_rednet_backbone(cfg, input_shape)
    top_block = LastLevelP6P7OnInput(bottom_up.output_shape()["res5"].channels, cfg.MODEL.FPN.OUT_CHANNELS)
    return _fpn(cfg, bottom_up, top_block)
