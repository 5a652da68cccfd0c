"""The Involution2d layer: a kernel generated at each pixel, then shared across a group of channels."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .ops import canonical_backend, fused_involution2d, fusion_pays, involution2d, local_correlation

KERNEL_GENERATIONS = ("bottleneck", "linear", "dot_product")


class ConvModule(nn.Module):
    """conv [+ BN + ReLU]; named like OpenMMLab's ConvModule so official checkpoints load by name."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, norm_act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm2d(out_channels)
            self.act = nn.ReLU(inplace=True)
        self.norm_act = norm_act

    def forward(self, x):
        x = self.conv(x)
        return self.act(self.bn(x)) if self.norm_act else x


class CeilAvgPool2d(nn.Module):
    """stride x stride average pool whose output size rounds up: a partial last window averages the
    pixels it covers. Written as zero padding and an explicit count rather than
    avg_pool2d(ceil_mode=True), whose gradient torch.compile gets wrong on those windows
    (pytorch/pytorch#198119, torch 2.14)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        s = self.stride
        extra_h, extra_w = -x.shape[-2] % s, -x.shape[-1] % s
        if not (extra_h or extra_w):
            return F.avg_pool2d(x, s)
        padding = [0, extra_w, 0, extra_h]
        counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), padding), s)
        return F.avg_pool2d(F.pad(x, padding), s) / counts

    def extra_flops(self, input: torch.Tensor, output: torch.Tensor) -> int:
        return input[0].numel()  # a pooling layer, counted like one

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def window_validity(height, width, kernel_size, stride, padding, dilation, device) -> torch.Tensor:
    """(K, K, Ho, Wo) mask: True where tap (u, v) of output pixel (i, j) falls inside the input."""

    def valid(size):
        out = (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
        position = (torch.arange(out, device=device) * stride - padding)[None, :]
        position = position + (torch.arange(kernel_size, device=device) * dilation)[:, None]
        return (position >= 0) & (position < size)

    rows, cols = valid(height), valid(width)
    return rows[:, None, :, None] & cols[None, :, None, :]


def window_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax of (B, G, K, K, Ho, Wo) logits over each window's taps, ignoring taps outside the input."""
    logits = logits.masked_fill(~valid, float("-inf")).flatten(2, 3)
    return logits.softmax(dim=2).unflatten(2, valid.shape[:2])


class Involution2d(nn.Module):
    """Involution (Li et al., CVPR 2021).

    A kernel of K*K weights for each of G = C / group_channels groups is generated at every output pixel,
    by one of ``kernel_generation``:
    - "bottleneck" (the paper's): conv2(ReLU(BN(conv1(pool(x))))), 1x1 convs C -> C/r -> K*K*G;
    - "linear": conv2(pool(x)), one 1x1 conv C -> K*K*G (no reduction; ``reduction_ratio`` is unused);
    - "dot_product": softmax over the window of query . key / sqrt(d), with 1x1 projections C -> C/r
      for query (at pool(x)) and key (at x), split into G groups: local self-attention on the
      un-projected input, i.e. self-attention as an instance of involution.
    With stride > 1, pool is a stride x stride average pool that rounds up (CeilAvgPool2d), so the kernel
    map has the output's size on odd inputs too (the official code rounds down there).
    ``fused`` (bottleneck and linear generation): True computes conv2 and the aggregation together with
    ``fused_involution2d``; on the Triton and cpp backends the (B, G, K, K, Ho, Wo) kernel map is then never
    stored (the same result up to the order of float sums; elsewhere it is computed as usual). None (the default)
    fuses where that is faster (``fusion_pays``: the compiled CPU kernels, with a reduced width of at most twice
    the group's channels); False never does.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        stride: int = 1,
        group_channels: int = 16,
        reduction_ratio: int = 4,
        dilation: int = 1,
        kernel_generation: str = "bottleneck",
        backend: str = "auto",
        fused: Optional[bool] = None,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Involution2d: kernel_size must be odd and positive, got {kernel_size}")
        if group_channels < 1 or channels % group_channels:
            raise ValueError(f"Involution2d: channels={channels} is not divisible by group_channels={group_channels}")
        if reduction_ratio < 1 or channels // reduction_ratio < 1:
            raise ValueError(f"Involution2d: reduction_ratio={reduction_ratio} leaves no channels out of {channels}")
        if kernel_generation not in KERNEL_GENERATIONS:
            raise ValueError(
                f"Involution2d: unknown kernel_generation {kernel_generation!r}, expected one of {KERNEL_GENERATIONS}"
            )
        if fused and kernel_generation == "dot_product":
            raise ValueError("Involution2d: fused=True needs a 1x1-conv kernel generation (bottleneck or linear)")
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.group_channels = group_channels
        self.groups = channels // group_channels
        self.reduction_ratio = reduction_ratio
        self.dilation = dilation
        self.kernel_generation = kernel_generation
        self.backend = canonical_backend(backend, "Involution2d")
        self.fused = fused
        self.pool = CeilAvgPool2d(stride) if stride > 1 else nn.Identity()
        reduced = channels // reduction_ratio
        weights = kernel_size**2 * self.groups
        if kernel_generation == "bottleneck":
            self.conv1 = ConvModule(channels, reduced)
            self.conv2 = ConvModule(reduced, weights, norm_act=False)
        elif kernel_generation == "linear":
            self.conv2 = ConvModule(channels, weights, norm_act=False)
        else:
            if reduced % self.groups:
                raise ValueError(
                    f"Involution2d: dot_product needs channels // reduction_ratio = {reduced} divisible by the "
                    f"{self.groups} groups"
                )
            self.query = nn.Conv2d(channels, reduced, 1, bias=False)
            self.key = nn.Conv2d(channels, reduced, 1, bias=False)
            self.scale = (reduced // self.groups) ** -0.5

    def generate_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, G, K, K, Ho, Wo) kernel for input x."""
        k = self.kernel_size
        if self.kernel_generation == "dot_product":
            query = self.query(self.pool(x)) * self.scale
            logits = local_correlation(
                query, self.key(x), k, self.groups, self.stride, dilation=self.dilation, backend=self.backend
            )
            padding = self.dilation * (k - 1) // 2
            valid = window_validity(*x.shape[-2:], k, self.stride, padding, self.dilation, x.device)
            return window_softmax(logits, valid)
        return self.conv2(self.kernel_features(x)).unflatten(1, (self.groups, k, k))

    def kernel_features(self, x: torch.Tensor) -> torch.Tensor:
        """What conv2 turns into the kernel: the reduced features (bottleneck) or the pooled input (linear)."""
        pooled = self.pool(x)
        return self.conv1(pooled) if self.kernel_generation == "bottleneck" else pooled

    def fuses(self, x: torch.Tensor) -> bool:
        """Whether the forward of input x computes conv2 inside the aggregation (fused_involution2d)."""
        if self.fused is None:
            return self.kernel_generation != "dot_product" and fusion_pays(
                self.backend, x, self.conv2.conv.in_channels, self.group_channels
            )
        return self.fused

    def forward(self, x):
        if self.fuses(x):
            conv = self.conv2.conv
            return fused_involution2d(
                x, self.kernel_features(x), conv.weight, conv.bias, self.kernel_size, self.groups, self.stride,
                dilation=self.dilation, backend=self.backend,
            )  # fmt: skip
        kernel = self.generate_kernel(x)
        return involution2d(x, kernel, self.stride, dilation=self.dilation, backend=self.backend)

    def extra_flops(self, input: torch.Tensor, output: torch.Tensor) -> int:
        """Multiply-adds per sample beyond the child modules': the aggregation (and the query-key products)."""
        aggregation = self.kernel_size**2 * output[0].numel()
        if self.kernel_generation == "dot_product":
            aggregation += self.kernel_size**2 * self.query.out_channels * output[0, 0].numel()
        if self.fuses(input):  # conv2 runs inside the fused op, so its forward hook does not fire
            conv = self.conv2.conv
            aggregation += conv.out_channels * (conv.in_channels + 1) * output[0, 0].numel()  # with the bias
        return aggregation

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"group_channels={self.group_channels}, reduction_ratio={self.reduction_ratio}, "
            f"dilation={self.dilation}, kernel_generation={self.kernel_generation!r}, backend={self.backend!r}, "
            f"fused={self.fused}"
        )
