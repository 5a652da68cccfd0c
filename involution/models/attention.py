"""Stand-alone local self-attention (Ramachandran et al., 2019, arXiv 1906.05909), the paper's self-attention
baseline: the bottleneck layer and the full-attention model's stem.

Each pixel attends to the K x K window around it, per head: softmax(q . k / sqrt(d) + q . r) v, where
r is a learned relative position embedding (half of each head's dims encode the row offset, half the
column offset). The logits come from ``local_correlation`` and the weighted sum from ``involution2d``
(the attention weights are an involution kernel with one group per head), so no K*K-expanded copies
of keys or values are made. With stride > 1 the output is average-pooled, as in the SASA paper.
"""

import torch
import torch.nn.functional as F
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


class AttentionStem(nn.Module):
    """SASA's attention stem layer (Sec. 3.2 and Appendix A.1 of the SASA paper): multi-head self-attention
    within each non-overlapping window x window block (the receptive field of the max pool that follows it),
    with spatially aware values. A pixel at row a, column b of its block gets the value
    (sum_m p(a, b, m) W_V^m) x, a convex combination of ``mixtures`` value matrices whose weights
    p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m) depend on its position in the block and are shared
    by all heads. Queries and keys are 1x1 projections; no spatial convolution. Inputs whose sides are not
    multiples of ``window`` are zero-padded at the bottom and right, and the padding is masked out of the
    attention and cropped from the output. The paper gives 4 heads; it does not give the number of mixtures
    or the embedding width (4 and ``channels`` here). Logits are scaled by 1/sqrt(head dims), as in
    LocalSelfAttention."""

    def __init__(self, in_chans: int, channels: int, window: int = 4, heads: int = 4, mixtures: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"AttentionStem: channels={channels} is not divisible by heads={heads}")
        self.in_chans, self.channels = in_chans, channels
        self.window, self.heads, self.mixtures = window, heads, mixtures
        self.query = nn.Conv2d(in_chans, channels, 1, bias=False)
        self.key = nn.Conv2d(in_chans, channels, 1, bias=False)
        # W_V^m, initialised like the 1x1 convolutions (Kaiming normal, fan out).
        self.value_weights = nn.Parameter(torch.randn(mixtures, channels, in_chans) * (2 / channels) ** 0.5)
        self.row_embedding = nn.Parameter(torch.randn(window, channels) * channels**-0.5)
        self.col_embedding = nn.Parameter(torch.randn(window, channels) * channels**-0.5)
        self.mixture_embedding = nn.Parameter(torch.randn(mixtures, channels) * channels**-0.5)

    def value_matrices(self) -> torch.Tensor:
        """(window, window, channels, in_chans): the value matrix of each position in a block."""
        position = self.row_embedding[:, None, :] + self.col_embedding[None, :, :]
        mixing = (position @ self.mixture_embedding.T).softmax(dim=-1)  # p(a, b, m)
        return torch.einsum("abm,mod->abod", mixing, self.value_weights)

    def forward(self, x):
        height, width, w = x.shape[-2], x.shape[-1], self.window
        padding = [0, -width % w, 0, -height % w]
        x = F.pad(x, padding)
        rows, cols = x.shape[-2] // w, x.shape[-1] // w
        values = torch.einsum(
            "ijoc,ncrisj->norisj", self.value_matrices(), x.unflatten(2, (rows, w)).unflatten(4, (cols, w))
        )
        mask = None
        if any(padding):  # keys in the padding take no part
            inside = F.pad(torch.ones(height, width, dtype=torch.bool, device=x.device), padding)
            mask = inside.reshape(rows, w, cols, w).transpose(1, 2).reshape(rows * cols, 1, w * w)
        query, key = self._blocks(self.query(x)), self._blocks(self.key(x))
        out = F.scaled_dot_product_attention(query, key, self._blocks(values.flatten(4, 5).flatten(2, 3)), mask)
        out = out.unflatten(2, (rows, cols)).unflatten(4, (w, w)).permute(0, 1, 6, 2, 4, 3, 5)
        return out.reshape(x.shape[0], self.channels, rows * w, cols * w)[..., :height, :width]

    def _blocks(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, heads, blocks, pixels of a block, C / heads)."""
        w = self.window
        t = t.unflatten(1, (self.heads, -1)).unflatten(3, (-1, w)).unflatten(5, (-1, w))  # B, h, d, r, i, s, j
        return t.permute(0, 1, 3, 5, 4, 6, 2).flatten(4, 5).flatten(2, 3)

    def extra_flops(self, input: torch.Tensor, output: torch.Tensor) -> int:
        """Multiply-adds per sample beyond the query and key projections: the values' 1x1 transform, and
        per pixel and channel window^2 query-key products and window^2 products in the weighted sum."""
        pixels = input.shape[-2] * input.shape[-1]
        return pixels * self.channels * (self.in_chans + 2 * self.window**2)

    def extra_repr(self) -> str:
        return f"{self.in_chans}, {self.channels}, window={self.window}, heads={self.heads}, mixtures={self.mixtures}"
