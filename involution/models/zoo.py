"""The registered models: RedNet (involution), ResNet (convolution) and SASA (local self-attention, with a
convolution stem or, as ``sasafull``, the attention stem), at the paper's depths, in the same skeleton."""

from functools import partial

from ..module import Involution2d
from .attention import LocalSelfAttention
from .registry import register_model
from .skeleton import BottleneckNet, conv3x3_mixer

DEPTHS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def rednet(
    depth: int,
    kernel_size: int = 7,
    group_channels: int = 16,
    reduction_ratio: int = 4,
    kernel_generation: str = "bottleneck",
    dilation: int = 1,
    stem: str = "involution",
    backend: str = "auto",
    **kwargs,
) -> BottleneckNet:
    """RedNet: every bottleneck's 3x3 convolution replaced by a KxK involution. ``stem_kernel_size`` 3 is
    the official classification stem, 7 the official detection/segmentation one."""
    mixer = partial(
        Involution2d,
        kernel_size=kernel_size,
        group_channels=group_channels,
        reduction_ratio=reduction_ratio,
        dilation=dilation,
        kernel_generation=kernel_generation,
        backend=backend,
    )
    return BottleneckNet(DEPTHS[depth], mixer, stem=stem, backend=backend, **kwargs)


def resnet(depth: int, stem: str = "conv", **kwargs) -> BottleneckNet:
    """The convolution baseline: the standard bottleneck ResNet at the same stage depths."""
    return BottleneckNet(DEPTHS[depth], conv3x3_mixer, stem=stem, **kwargs)


def sasa(
    depth: int,
    kernel_size: int = 7,
    heads: int = 8,
    dilation: int = 1,
    stem: str = "conv",
    backend: str = "auto",
    **kwargs,
) -> BottleneckNet:
    """The self-attention baseline: every bottleneck's 3x3 convolution replaced by KxK local multi-head
    self-attention with relative positions (SASA's "conv-stem + attention"; ``stem="attention"`` gives its
    "full attention" model, registered as ``sasafull``)."""
    mixer = partial(LocalSelfAttention, kernel_size=kernel_size, heads=heads, dilation=dilation, backend=backend)
    return BottleneckNet(DEPTHS[depth], mixer, stem=stem, backend=backend, **kwargs)


def sasafull(depth: int, stem: str = "attention", **kwargs) -> BottleneckNet:
    """SASA's full-attention model: the attention stem, no spatial convolution anywhere (published at
    depths 26/38/50)."""
    return sasa(depth, stem=stem, **kwargs)


for _family, _depths in ((rednet, DEPTHS), (resnet, DEPTHS), (sasa, DEPTHS), (sasafull, (26, 38, 50))):
    for _depth in _depths:
        _builder = partial(_family, _depth)
        _builder.__name__ = f"{_family.__name__}{_depth}"
        _builder.__doc__ = f"{_family.__name__}{_depth}: {(_family.__doc__ or '').splitlines()[0]}"
        register_model(_builder)
