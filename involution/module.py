"""The Involution2d layer: a kernel generated from each pixel, then shared across a group of channels."""
from torch import nn

from .ops import BACKENDS, involution2d


class ConvModule(nn.Module):
    """1x1 conv [+ BN + ReLU]; named like OpenMMLab's ConvModule so official checkpoints load by name."""

    def __init__(self, in_channels: int, out_channels: int, norm_act: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm2d(out_channels)
            self.act = nn.ReLU(inplace=True)
        self.norm_act = norm_act

    def forward(self, x):
        x = self.conv(x)
        return self.act(self.bn(x)) if self.norm_act else x


class Involution2d(nn.Module):
    """Involution (Li et al., CVPR 2021) with the paper's kernel generation.

    kernel = conv2(ReLU(BN(conv1(pool(x))))): a 1x1 reduction C -> C/r, then a 1x1 expansion to the
    K*K weights of each of the G = C / group_channels groups, at every output pixel. With stride > 1,
    pool is a stride x stride average pool that rounds up, so the kernel map has the output's size
    on odd inputs too (the official code rounds down there).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        stride: int = 1,
        group_channels: int = 16,
        reduction_ratio: int = 4,
        dilation: int = 1,
        backend: str = "auto",
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Involution2d: kernel_size must be odd and positive, got {kernel_size}")
        if group_channels < 1 or channels % group_channels:
            raise ValueError(
                f"Involution2d: channels={channels} is not divisible by group_channels={group_channels}"
            )
        if reduction_ratio < 1 or channels // reduction_ratio < 1:
            raise ValueError(
                f"Involution2d: reduction_ratio={reduction_ratio} leaves no channels out of {channels}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"Involution2d: unknown backend {backend!r}, expected one of {BACKENDS}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.group_channels = group_channels
        self.groups = channels // group_channels
        self.reduction_ratio = reduction_ratio
        self.dilation = dilation
        self.backend = backend
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.conv1 = ConvModule(channels, channels // reduction_ratio, norm_act=True)
        self.conv2 = ConvModule(channels // reduction_ratio, kernel_size**2 * self.groups, norm_act=False)

    def forward(self, x):
        kernel = self.conv2(self.conv1(self.pool(x)))
        kernel = kernel.unflatten(1, (self.groups, self.kernel_size, self.kernel_size))
        return involution2d(x, kernel, self.stride, dilation=self.dilation, backend=self.backend)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"group_channels={self.group_channels}, reduction_ratio={self.reduction_ratio}, "
            f"dilation={self.dilation}, backend={self.backend!r}"
        )
