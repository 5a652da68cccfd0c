"""The public involution op: input checks, backend choice, and its torch.library registration.

The fast backends ("cpu", "triton") run inside the custom op ``involution::aggregate`` (with a fake
kernel and autograd formula, so torch.compile(fullgraph=True) traces models that use it, and fvcore
sees one op to count). The "reference" backend and ONNX export use the unfold decomposition directly.
"""
import os
from types import ModuleType
from typing import Optional

import torch

from . import cpu
from .reference import involution2d_reference

BACKENDS = ("auto", "reference", "cpu", "triton")


def involution2d(
    input: torch.Tensor,
    kernel: torch.Tensor,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Involution of ``input`` (B, C, H, W) with per-pixel ``kernel`` (B, G, K, K, Ho, Wo).

    Channel c is weighted by kernel group ``c // (C // G)``; ``padding`` defaults to
    ``dilation * (K - 1) // 2``. Returns (B, C, Ho, Wo) in the input's dtype (fp32 accumulation).
    ``backend``: "auto" (Triton on CUDA, the memory-efficient path elsewhere), "reference" (unfold),
    "cpu" or "triton".
    """
    _check_tensors(input, kernel)
    if padding is None:
        # int(): under torch.jit.trace (fvcore's FLOP counting) sizes are traced tensors.
        padding = int(dilation * (kernel.shape[2] - 1) // 2)
    _check_geometry(input, kernel, stride, padding, dilation)
    input, kernel = _autocast(input, kernel)
    backend = _resolve_backend(backend, input)
    if backend == "reference" or torch.onnx.is_in_onnx_export():
        return involution2d_reference(input, kernel, stride, padding, dilation)
    return aggregate(input, kernel, stride, padding, dilation, backend)


def _check_tensors(input, kernel) -> None:
    for name, tensor in (("input", input), ("kernel", kernel)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"involution2d: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"involution2d: {name} must be floating point, got {tensor.dtype}")
    if input.dim() != 4:
        raise ValueError(f"involution2d: input must be 4-D (B, C, H, W), got shape {tuple(input.shape)}")
    if kernel.dim() != 6:
        raise ValueError(f"involution2d: kernel must be 6-D (B, G, K, K, Ho, Wo), got shape {tuple(kernel.shape)}")
    if input.device != kernel.device:
        raise ValueError(f"involution2d: input is on {input.device} but kernel is on {kernel.device}")
    if input.dtype != kernel.dtype and not _autocast_enabled(input):
        raise TypeError(
            f"involution2d: mixed dtypes, input is {input.dtype} but kernel is {kernel.dtype} "
            "(cast one, or run under torch.autocast)"
        )


def _check_geometry(input, kernel, stride, padding, dilation) -> None:
    batch, channels, height, width = input.shape
    kernel_batch, groups, kernel_h, kernel_w, map_h, map_w = kernel.shape
    for name, value, minimum in (("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0)):
        if isinstance(value, (bool, float)) or not hasattr(value, "__index__") or value < minimum:
            raise ValueError(f"involution2d: {name} must be an int >= {minimum}, got {value!r}")
    if kernel_h != kernel_w:
        raise ValueError(f"involution2d: kernel must be square, got {kernel_h}x{kernel_w}")
    if kernel_h % 2 == 0:
        raise ValueError(f"involution2d: kernel size must be odd, got K={kernel_h}")
    if kernel_batch != batch:
        raise ValueError(f"involution2d: batch sizes differ, input has {batch} but kernel has {kernel_batch}")
    if groups < 1 or channels % groups:
        raise ValueError(f"involution2d: channels C={channels} are not divisible by the kernel's groups G={groups}")
    reach = dilation * (kernel_h - 1)
    out_h = (height + 2 * padding - reach - 1) // stride + 1
    out_w = (width + 2 * padding - reach - 1) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"involution2d: input {height}x{width} with padding {padding} is smaller than the "
            f"{kernel_h}x{kernel_h} kernel's reach (dilation {dilation})"
        )
    if (map_h, map_w) != (out_h, out_w):
        raise ValueError(
            f"involution2d: kernel map is {map_h}x{map_w} but the output is {out_h}x{out_w} "
            f"(input {height}x{width}, K={kernel_h}, stride {stride}, padding {padding}, dilation {dilation})"
        )


def _autocast_enabled(tensor: torch.Tensor) -> bool:
    return torch.is_autocast_enabled(tensor.device.type)


def _autocast(input, kernel):
    """Under torch.autocast the op runs in the autocast dtype, as convolutions do."""
    if not _autocast_enabled(input):
        return input, kernel
    dtype = torch.get_autocast_dtype(input.device.type)
    return input.to(dtype), kernel.to(dtype)


def _resolve_backend(backend: str, input: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"involution2d: unknown backend {backend!r}, expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if input.is_cuda and _triton_available() else "cpu"
    if backend == "triton" and input.device.type != "cuda" and not _triton_interpreting():
        raise ValueError(
            "involution2d: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before triton "
            f"is imported, to interpret the kernels on the CPU); got a tensor on {input.device}"
        )
    return backend


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _implementation(backend: str) -> ModuleType:
    if backend == "triton":
        # Imported on first use: importing triton fixes whether its interpreter is on.
        from . import triton_kernels

        return triton_kernels
    return cpu


@torch.library.custom_op("involution::aggregate", mutates_args=())
def aggregate(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int, backend: str) -> torch.Tensor:
    return _implementation(backend).forward(input, kernel, stride, padding, dilation)


@aggregate.register_fake
def _(input, kernel, stride, padding, dilation, backend):
    return input.new_empty(input.shape[:2] + kernel.shape[-2:])


@torch.library.custom_op("involution::aggregate_grad_input", mutates_args=())
def aggregate_grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input: torch.Tensor, stride: int, padding: int, dilation: int, backend: str
) -> torch.Tensor:
    return _implementation(backend).grad_input(grad_out, kernel, tuple(input.shape[-2:]), stride, padding, dilation)


@aggregate_grad_input.register_fake
def _(grad_out, kernel, input, stride, padding, dilation, backend):
    return input.new_empty(input.shape)


@torch.library.custom_op("involution::aggregate_grad_kernel", mutates_args=())
def aggregate_grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int, backend: str
) -> torch.Tensor:
    return _implementation(backend).grad_kernel(grad_out, input, kernel.shape[2], kernel.shape[1], stride, padding, dilation)


@aggregate_grad_kernel.register_fake
def _(grad_out, input, kernel, stride, padding, dilation, backend):
    return kernel.new_empty(kernel.shape)


def _setup_context(ctx, inputs, output):
    input, kernel, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(input, kernel)
    ctx.geometry = (stride, padding, dilation, backend)


def _backward(ctx, grad_out):
    input, kernel = ctx.saved_tensors
    grad_input = grad_kernel = None
    if ctx.needs_input_grad[0]:
        grad_input = aggregate_grad_input(grad_out, kernel, input, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_kernel = aggregate_grad_kernel(grad_out, input, kernel, *ctx.geometry)
    return grad_input, grad_kernel, None, None, None, None


aggregate.register_autograd(_backward, setup_context=_setup_context)
