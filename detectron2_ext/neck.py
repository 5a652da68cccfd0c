"""The involution neck: an FPN whose 3x3 output convolutions are KxK involutions."""

from detectron2.modeling.backbone.fpn import FPN
from torch import nn

from involution import Involution2d


def involution_args(cfg) -> dict:
    """Involution2d arguments shared by the neck and the heads (MODEL.INVOLUTION)."""
    return {
        "kernel_size": cfg.MODEL.INVOLUTION.KERNEL_SIZE,
        "group_channels": cfg.MODEL.INVOLUTION.GROUP_CHANNELS,
        "reduction_ratio": cfg.MODEL.INVOLUTION.REDUCTION_RATIO,
    }


def involution_like(conv: nn.Conv2d, involution: dict) -> nn.Module:
    """The involution (+ ReLU when ``conv`` had one) that takes the place of a 3x3 convolution that keeps the
    channels (an involution cannot change them)."""
    if conv.in_channels != conv.out_channels or conv.stride != (1, 1):
        raise ValueError(
            f"an involution cannot replace {conv}: it keeps the channel count and here the stride is 1 "
            f"(in {conv.in_channels}, out {conv.out_channels}, stride {conv.stride})"
        )
    layer = Involution2d(conv.in_channels, **involution)
    return nn.Sequential(layer, nn.ReLU()) if getattr(conv, "activation", None) is not None else layer


class InvolutionFPN(FPN):
    """Detectron2's FPN with each level's 3x3 output convolution replaced by an involution (the paper's
    involution neck). The lateral 1x1 convolutions and the extra levels (P6 max pool, RetinaNet's P6/P7
    convolutions) stay as they are; the output convolutions' normalization (``norm``) is not used."""

    def __init__(self, *args, involution: dict, **kwargs):
        super().__init__(*args, **kwargs)
        replaced = {}
        for name, conv in list(self.named_children()):
            if name.startswith("fpn_output"):
                replaced[conv] = involution_like(conv, involution)
                setattr(self, name, replaced[conv])
        self.output_convs = [replaced[conv] for conv in self.output_convs]
