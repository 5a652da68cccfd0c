"""Memory-efficient involution in plain torch ops: one pass per kernel offset, no K*K-expanded tensor.

For every offset (u, v) the input window it reads is a strided *view* of the padded input, so the
forward pass is K*K in-place multiply-adds into the output and needs memory for one padded copy of the
input only. The unfold reference instead materialises K*K copies of the input (and of the product).
Written for the CPU; as it is plain torch, it also runs on any other device.
"""
import torch
import torch.nn.functional as F


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _padded_phases(input: torch.Tensor, padding: int, stride: int) -> torch.Tensor:
    """Zero-pad (..., H, W), then split it into stride x stride phases (a copy, when stride > 1):
    phases[..., a, b, i, j] = padded[..., i*stride + a, j*stride + b]. Every window the op reads is then a
    unit-stride slice of one phase, which vectorises; strided windows of the padded input do not."""
    height, width = input.shape[-2:]
    extra_h = -(height + 2 * padding) % stride
    extra_w = -(width + 2 * padding) % stride
    padded = F.pad(input, [padding, padding + extra_w, padding, padding + extra_h])
    phases = padded.unflatten(-1, (-1, stride)).unflatten(-3, (-1, stride))  # (..., H/s, a, W/s, b)
    return phases.permute(*range(phases.dim() - 4), -3, -1, -4, -2).contiguous()


def _from_phases(phases: torch.Tensor, height: int, width: int, padding: int) -> torch.Tensor:
    """Inverse of _padded_phases: interleave the phases, then crop the padding."""
    padded = phases.permute(*range(phases.dim() - 4), -2, -4, -1, -3).flatten(-2).flatten(-3, -2)
    return padded[..., padding : padding + height, padding : padding + width]


def _windows(phases: torch.Tensor, kernel_size: int, stride: int, dilation: int, out_h: int, out_w: int):
    """Yield (u, v, view) with view[..., i, j] = padded[..., i*stride + u*dilation, j*stride + v*dilation]."""
    for u in range(kernel_size):
        for v in range(kernel_size):
            top, left = u * dilation, v * dilation
            row, col = top // stride, left // stride
            yield u, v, phases[..., top % stride, left % stride, row : row + out_h, col : col + out_w]


def _grouped(tensor: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, ...) -> (B, G, C/G, ...), a view."""
    return tensor.unflatten(1, (groups, tensor.shape[1] // groups))


def _grouped_phases(input: torch.Tensor, groups: int, padding: int, stride: int) -> torch.Tensor:
    return _grouped(_padded_phases(input.to(_accumulation_dtype(input.dtype)), padding, stride), groups)


def forward(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    _, groups, k, _, out_h, out_w = kernel.shape
    phases = _grouped_phases(input, groups, padding, stride)
    kernel = kernel.to(phases.dtype)
    out = phases.new_zeros(phases.shape[:3] + (out_h, out_w))
    for u, v, window in _windows(phases, k, stride, dilation, out_h, out_w):
        out.addcmul_(window, kernel[:, :, None, u, v])
    return out.flatten(1, 2).to(input.dtype)


def grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input_size: tuple, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    height, width = input_size
    _, groups, k, _, out_h, out_w = kernel.shape
    acc_dtype = _accumulation_dtype(grad_out.dtype)
    # Gradient of the padded input, in the phase layout the forward pass read from.
    grad_phases = _grouped_phases(grad_out.new_zeros(grad_out.shape[:2] + input_size, dtype=acc_dtype), groups,
                                  padding, stride)
    grad_out_grouped = _grouped(grad_out.to(acc_dtype), groups)
    kernel = kernel.to(acc_dtype)
    for u, v, window in _windows(grad_phases, k, stride, dilation, out_h, out_w):
        window.addcmul_(grad_out_grouped, kernel[:, :, None, u, v])
    grad = _from_phases(grad_phases, height, width, padding).flatten(1, 2)
    return grad.to(grad_out.dtype).contiguous()


def grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    k = kernel_size
    out_h, out_w = grad_out.shape[-2:]
    phases = _grouped_phases(input, groups, padding, stride)
    grad_out = _grouped(grad_out.to(phases.dtype), groups)
    # Offsets first, so that each offset's slice is contiguous for the reduction's out=.
    grad = phases.new_empty((k, k) + grad_out.shape[:2] + (out_h, out_w))
    product = torch.empty_like(grad_out)
    for u, v, window in _windows(phases, k, stride, dilation, out_h, out_w):
        torch.mul(window, grad_out, out=product)
        torch.sum(product, dim=2, out=grad[u, v])
    return grad.permute(2, 3, 0, 1, 4, 5).to(input.dtype).contiguous()
