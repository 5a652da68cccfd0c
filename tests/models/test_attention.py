"""Local self-attention and dot-product involution against a direct unfold implementation."""

import pytest
import torch
import torch.nn.functional as F

from involution import Involution2d
from involution.models.attention import AttentionStem, LocalSelfAttention


def windows(t, k, stride, dilation):
    """(B, C, H, W) -> (B, C, K*K, Ho*Wo) zero-padded windows, plus the (K*K, Ho*Wo) in-bounds mask."""
    padding = dilation * (k - 1) // 2
    cols = F.unfold(t, k, dilation, padding, stride)
    inside = F.unfold(torch.ones_like(t[:1, :1]), k, dilation, padding, stride)[0].bool()
    return cols.view(t.shape[0], t.shape[1], k * k, -1), inside


def attend(query, key_windows, value_windows, inside, heads, position_logits=0.0):
    b, c, kk, n = key_windows.shape
    q = query.reshape(b, heads, c // heads, 1, n)
    logits = (q * key_windows.view(b, heads, c // heads, kk, n)).sum(2) + position_logits
    weights = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)
    v = value_windows.view(b, heads, -1, kk, n)
    return (weights[:, :, None] * v).sum(3).reshape(b, -1, n)


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 9), (2, 8)])
def test_local_self_attention_matches_direct_computation(stride, size):
    torch.manual_seed(0)
    layer = LocalSelfAttention(16, kernel_size=5, stride=stride, heads=4).eval()
    x = torch.randn(2, 16, size, size + 2)
    k, heads, d = 5, 4, 4
    q = layer.query(x).flatten(2) * d**-0.5
    key_w, inside = windows(layer.key(x), k, 1, 1)
    value_w, _ = windows(layer.value(x), k, 1, 1)
    # r[(u, v)] = rel_rows[:, u] on the first half of each head's dims, rel_cols[:, v] on the second half.
    positions = torch.cat(
        [layer.rel_rows[:, :, None].expand(-1, k, k), layer.rel_cols[:, None, :].expand(-1, k, k)]
    ).reshape(d, k * k)
    position_logits = torch.einsum("bhdn,dk->bhkn", q.view(2, heads, d, -1), positions)
    out = attend(q, key_w, value_w, inside, heads, position_logits).view(2, 16, size, size + 2)
    expected = F.avg_pool2d(out, stride, ceil_mode=True) if stride > 1 else out
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_dot_product_involution_is_local_attention_on_the_input(stride):
    torch.manual_seed(0)
    layer = Involution2d(
        16, kernel_size=3, stride=stride, group_channels=4, reduction_ratio=2, kernel_generation="dot_product"
    ).eval()
    x = torch.randn(2, 16, 7, 9)
    q = layer.query(F.avg_pool2d(x, stride, ceil_mode=True) if stride > 1 else x).flatten(2) * 2**-0.5
    key_w, inside = windows(layer.key(x), 3, stride, 1)
    value_w, _ = windows(x, 3, stride, 1)
    expected = attend(q, key_w, value_w, inside, heads=4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).flatten(2), expected, atol=1e-5, rtol=1e-5)


def test_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels=10 is not divisible by heads=4"):
        LocalSelfAttention(10, heads=4)
    with pytest.raises(ValueError, match="dot_product needs channels // reduction_ratio = 2 divisible by the 4 groups"):
        Involution2d(16, group_channels=4, reduction_ratio=8, kernel_generation="dot_product")


@pytest.mark.parametrize("size", [(8, 12), (7, 10)])  # whole blocks; partial blocks at the bottom and right
def test_attention_stem_matches_direct_computation(size):
    torch.manual_seed(0)
    window, heads, channels = 4, 2, 8
    layer = AttentionStem(3, channels, window=window, heads=heads, mixtures=3).eval()
    x = torch.randn(2, 3, *size)
    height, width = size
    q, k = layer.query(x), layer.key(x)
    # p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m); value at (i, j): (sum_m p W_V^m) x_ij.
    mixing = ((layer.row_embedding[:, None] + layer.col_embedding[None]) @ layer.mixture_embedding.T).softmax(-1)
    expected = torch.zeros(2, channels, height, width)
    d = channels // heads
    for i in range(height):
        for j in range(width):
            block = [(a, b) for a in range(height) for b in range(width) if (a // 4, b // 4) == (i // 4, j // 4)]
            values = torch.stack(
                [
                    torch.einsum("m,mod,nd->no", mixing[a % 4, b % 4], layer.value_weights, x[:, :, a, b])
                    for a, b in block
                ],
                dim=-1,
            )  # (B, C, block pixels)
            keys = torch.stack([k[:, :, a, b] for a, b in block], dim=-1)
            for h in range(heads):
                part = slice(h * d, (h + 1) * d)
                logits = torch.einsum("nc,ncp->np", q[:, part, i, j], keys[:, part]) * d**-0.5
                expected[:, part, i, j] = torch.einsum("np,ncp->nc", logits.softmax(-1), values[:, part])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_attention_stem_names_bad_widths():
    with pytest.raises(ValueError, match="AttentionStem: channels=30 is not divisible by heads=4"):
        AttentionStem(3, 30)
