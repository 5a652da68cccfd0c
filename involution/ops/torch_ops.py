"""Memory-efficient involution in plain torch ops: one pass per kernel offset, no K*K-expanded tensor.

For every offset (u, v) the input window it reads is a *view* of the padded input, so the forward pass
is K*K in-place multiply-adds into the output. The unfold reference instead materialises K*K copies of
the input (and of the product).

Layout. The loops below see every tensor as (C/G, [phases,] H, W, B, G): a group's shared kernel weight
broadcasts over the first dimension. In memory, rows of Wo elements (NCHW order) vectorise well on large
feature maps; on small ones (late stages) rows that short leave the multiply-adds dominated by loop
overhead, so there the tensors are copied batch-innermost and each row is Wo * B * G elements long.
With stride s the padded input is also split into s x s phases, padded[i*s + a, j*s + b] =
phases[a, b, i, j], so that every window is a unit-stride slice of one phase.
Written for the CPU; as it is plain torch, it also runs on any other device.
"""

import torch
import torch.nn.functional as F


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


# Output rows shorter than this are laid out batch-innermost (measured by benchmarks/op_bench.py).
_MIN_NCHW_ROW = 24


def _arranged(tensor: torch.Tensor, batch_inner: bool) -> torch.Tensor:
    """(B, G, C/G, *rest) -> a (C/G, *rest, B, G) view, batch-innermost in memory if batch_inner."""
    order = (2, *range(3, tensor.dim()), 0, 1)
    return tensor.permute(order).contiguous() if batch_inner else tensor.contiguous().permute(order)


def _zeros_arranged(like: torch.Tensor, shape_bgc: tuple, dtype: torch.dtype, batch_inner: bool) -> torch.Tensor:
    if batch_inner:
        return like.new_zeros(shape_bgc[2:] + shape_bgc[:2], dtype=dtype)
    return _arranged(like.new_zeros(shape_bgc, dtype=dtype), batch_inner)


def _phases(tensor: torch.Tensor, groups: int, padding: int, stride: int, batch_inner: bool) -> torch.Tensor:
    """(B, C, H, W) -> zero-padded phases, arranged (C/G, s, s, ceil(Hp/s), ceil(Wp/s), B, G), fp32 or wider."""
    height, width = tensor.shape[-2:]
    extra_h = -(height + 2 * padding) % stride
    extra_w = -(width + 2 * padding) % stride
    padded = F.pad(
        tensor.to(_accumulation_dtype(tensor.dtype)), [padding, padding + extra_w, padding, padding + extra_h]
    )
    phases = padded.unflatten(1, (groups, -1)).unflatten(-1, (-1, stride)).unflatten(-3, (-1, stride))
    return _arranged(phases.permute(0, 1, 2, 4, 6, 3, 5), batch_inner)  # from (B, G, C/G, H/s, a, W/s, b)


def _from_phases(phases: torch.Tensor, height: int, width: int, padding: int) -> torch.Tensor:
    """Inverse of _phases: (C/G, s, s, Hs, Ws, B, G) -> (B, C, H, W), cropping the padding."""
    padded = phases.permute(5, 6, 0, 3, 1, 4, 2).flatten(5, 6).flatten(3, 4).flatten(1, 2)
    return padded[..., padding : padding + height, padding : padding + width]


def _from_arranged(tensor: torch.Tensor) -> torch.Tensor:
    """(C/G, Ho, Wo, B, G) -> (B, C, Ho, Wo)."""
    return tensor.permute(3, 4, 0, 1, 2).flatten(1, 2)


def _windows(phases: torch.Tensor, kernel_size: int, stride: int, dilation: int, out_h: int, out_w: int):
    """Yield (u, v, view): view[c, i, j] = padded[c, i*stride + u*dilation, j*stride + v*dilation] (+ B, G)."""
    for u in range(kernel_size):
        for v in range(kernel_size):
            top, left = u * dilation, v * dilation
            row, col = top // stride, left // stride
            yield u, v, phases[:, top % stride, left % stride, row : row + out_h, col : col + out_w]


def forward(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    batch, channels = input.shape[:2]
    _, groups, k, _, out_h, out_w = kernel.shape
    batch_inner = out_w < _MIN_NCHW_ROW
    phases = _phases(input, groups, padding, stride, batch_inner)
    weights = _arranged(kernel.to(phases.dtype).unsqueeze(2), batch_inner)[0]  # (K, K, Ho, Wo, B, G)
    out = _zeros_arranged(phases, (batch, groups, channels // groups, out_h, out_w), phases.dtype, batch_inner)
    for u, v, window in _windows(phases, k, stride, dilation, out_h, out_w):
        out.addcmul_(window, weights[u, v])
    return _from_arranged(out).to(input.dtype).contiguous()


def grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input_size: tuple, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    batch, channels = grad_out.shape[:2]
    _, groups, k, _, out_h, out_w = kernel.shape
    height, width = input_size
    batch_inner = out_w < _MIN_NCHW_ROW
    acc_dtype = _accumulation_dtype(grad_out.dtype)
    phases_shape = (stride, stride, -(-(height + 2 * padding) // stride), -(-(width + 2 * padding) // stride))
    grad_phases = _zeros_arranged(grad_out, (batch, groups, channels // groups) + phases_shape, acc_dtype, batch_inner)
    grad_out = _arranged(grad_out.to(acc_dtype).unflatten(1, (groups, -1)), batch_inner)
    weights = _arranged(kernel.to(acc_dtype).unsqueeze(2), batch_inner)[0]
    # Scatter-add through the same windows the forward pass read from.
    for u, v, window in _windows(grad_phases, k, stride, dilation, out_h, out_w):
        window.addcmul_(grad_out, weights[u, v])
    return _from_phases(grad_phases, height, width, padding).to(kernel.dtype).contiguous()


def grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    k = kernel_size
    out_h, out_w = grad_out.shape[-2:]
    batch_inner = out_w < _MIN_NCHW_ROW
    phases = _phases(input, groups, padding, stride, batch_inner)
    grad_out = _arranged(grad_out.to(phases.dtype).unflatten(1, (groups, -1)), batch_inner)  # (C/G, Ho, Wo, B, G)
    batch = input.shape[0]
    grad = _zeros_arranged(phases, (batch, groups, k, k, out_h, out_w), phases.dtype, batch_inner)
    product = torch.empty_like(grad_out)
    for u, v, window in _windows(phases, k, stride, dilation, out_h, out_w):
        torch.mul(window, grad_out, out=product)
        torch.sum(product, dim=0, out=grad[u, v])  # over the group's channels
    return grad.permute(4, 5, 0, 1, 2, 3).to(input.dtype).contiguous()
