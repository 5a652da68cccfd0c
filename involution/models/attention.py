"""Stand-alone local self-attention (Ramachandran et al., 2019), the paper's self-attention baseline.

Each pixel attends to the K x K window around it, per head: softmax(q . k / sqrt(d) + q . r) v, where
r is a learned relative position embedding (half of each head's dims encode the row offset, half the
column offset). The logits come from ``local_correlation`` and the weighted sum from ``involution2d``
(the attention weights are an involution kernel with one group per head), so no K*K-expanded copies
of keys or values are made. With stride > 1 the output is average-pooled, as in the SASA paper.
"""

import torch
from torch import nn

from ..module import CeilAvgPool2d, window_softmax, window_validity
from ..ops import canonical_backend, involution2d, local_correlation


class LocalSelfAttention(nn.Module):
    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        stride: int = 1,
        heads: int = 8,
        dilation: int = 1,
        backend: str = "auto",
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"LocalSelfAttention: channels={channels} is not divisible by heads={heads}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"LocalSelfAttention: kernel_size must be odd and positive, got {kernel_size}")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.heads, self.dilation = heads, dilation
        self.backend = canonical_backend(backend, "LocalSelfAttention")
        head_dim = channels // heads
        self.query = nn.Conv2d(channels, channels, 1, bias=False)
        self.key = nn.Conv2d(channels, channels, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.rel_rows = nn.Parameter(torch.randn(head_dim // 2, kernel_size) * head_dim**-0.5)
        self.rel_cols = nn.Parameter(torch.randn(head_dim - head_dim // 2, kernel_size) * head_dim**-0.5)
        self.scale = head_dim**-0.5
        self.pool = CeilAvgPool2d(stride) if stride > 1 else nn.Identity()

    def relative_logits(self, query: torch.Tensor) -> torch.Tensor:
        """q . r for every window tap: (B, heads, K, K, H, W) as row + column terms."""
        query = query.unflatten(1, (self.heads, -1))
        rows, cols = query.split([self.rel_rows.shape[0], self.rel_cols.shape[0]], dim=2)
        row_logits = torch.einsum("bgdhw,du->bguhw", rows, self.rel_rows)
        col_logits = torch.einsum("bgdhw,dv->bgvhw", cols, self.rel_cols)
        return row_logits[:, :, :, None] + col_logits[:, :, None, :]

    def forward(self, x):
        k, padding = self.kernel_size, self.dilation * (self.kernel_size - 1) // 2
        query = self.query(x) * self.scale
        logits = local_correlation(query, self.key(x), k, self.heads, dilation=self.dilation, backend=self.backend)
        logits = logits + self.relative_logits(query)
        attention = window_softmax(logits, window_validity(*x.shape[-2:], k, 1, padding, self.dilation, x.device))
        out = involution2d(self.value(x), attention, dilation=self.dilation, backend=self.backend)
        return self.pool(out)

    def extra_flops(self, input: torch.Tensor, output: torch.Tensor) -> int:
        """Multiply-adds per sample beyond the 1x1 projections: query-key and query-position products,
        and the weighted sum of values (all at the input resolution, before pooling)."""
        pixels_channels = input[0].numel()
        return 2 * self.kernel_size**2 * pixels_channels + self.kernel_size * pixels_channels

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, heads={self.heads}, "
            f"dilation={self.dilation}, backend={self.backend!r}"
        )
