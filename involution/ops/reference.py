"""The unfold formulation of involution: the specification every fast path is tested against.

It materialises a K*K-expanded copy of the input, so it is slow and memory hungry, but it is plain
differentiable torch (double backward, ONNX export, any device and dtype).
"""

import torch
import torch.nn.functional as F


def involution2d_reference(
    input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """out[b, c, i, j] = sum_{u,v} kernel[b, g(c), u, v, i, j] * input_padded[b, c, i*s + u*d, j*s + v*d],
    with g(c) = c // (C // G). Shapes: input (B, C, H, W), kernel (B, G, K, K, Ho, Wo)."""
    batch, channels = input.shape[:2]
    _, groups, k, _, out_h, out_w = kernel.shape
    columns = F.unfold(input, k, dilation=dilation, padding=padding, stride=stride)
    columns = columns.view(batch, groups, channels // groups, k * k, out_h, out_w)
    weights = kernel.reshape(batch, groups, 1, k * k, out_h, out_w)
    # Accumulate in fp32 for half precision, as the fast paths do.
    acc_dtype = torch.promote_types(input.dtype, torch.float32)
    out = (columns.to(acc_dtype) * weights.to(acc_dtype)).sum(dim=3)
    return out.reshape(batch, channels, out_h, out_w).to(input.dtype)


def local_correlation_reference(
    query: torch.Tensor, key: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """out[b, g, u, v, i, j] = sum_{c in group g} query[b, c, i, j] * key_padded[b, c, i*s + u*d, j*s + v*d]:
    the query-key dot products over each K x K window (the kernel of dot-product involution / attention)."""
    batch, channels, out_h, out_w = query.shape
    k = kernel_size
    columns = F.unfold(key, k, dilation=dilation, padding=padding, stride=stride)
    columns = columns.view(batch, groups, channels // groups, k * k, out_h, out_w)
    acc_dtype = torch.promote_types(query.dtype, torch.float32)
    query = query.reshape(batch, groups, channels // groups, 1, out_h, out_w)
    out = (columns.to(acc_dtype) * query.to(acc_dtype)).sum(dim=2)
    return out.reshape(batch, groups, k, k, out_h, out_w).to(query.dtype)
