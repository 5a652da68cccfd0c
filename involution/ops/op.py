"""The public ops: input checks, backend choice, and their torch.library registration.

- ``involution2d``: the aggregation of an input with per-pixel kernels (``involution::aggregate``).
- ``local_correlation``: query-key dot products over K x K windows (``involution::correlate``), the
  kernel of dot-product involution and of local self-attention.
- ``fused_involution2d``: the aggregation with a kernel that a 1x1 convolution generates from reduced
  features (``involution::fused_aggregate`` on the Triton and cpp backends: the kernel map is computed per tile
  or row and never stored; the backward recomputes it, and on the cpp backend never stores its gradient either).
The two are each other's gradients (with ``involution::aggregate_grad_input``), so three kernels per
backend cover both ops and their backward passes. The fast backends ("torch", "cpp", "triton") run inside custom
ops with fake kernels and autograd formulas, so torch.compile(fullgraph=True) traces models that use
them and fvcore sees one op to count. The "reference" backend and ONNX export use the unfold
decomposition directly.
"""

import os
import warnings
from types import ModuleType
from typing import Optional

import torch

from . import cpp_ops, torch_ops
from .reference import involution2d_reference, local_correlation_reference

BACKENDS = ("auto", "reference", "torch", "cpp", "triton")
# Former backend names: still accepted, with a DeprecationWarning naming the current one.
RENAMED_BACKENDS = {"cpu": "torch"}


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
    ``backend``: "auto" (Triton on CUDA, the compiled CPU kernels on the CPU where they build, else the torch
    path), "reference" (unfold), "torch" (the memory-efficient path in plain torch ops, any device), "cpp" (the
    compiled CPU kernels) or "triton".
    """
    _check_tensors("involution2d", ("input", input, "(B, C, H, W)"), ("kernel", kernel, "(B, G, K, K, Ho, Wo)"))
    if padding is None:
        # int(): under torch.jit.trace (fvcore's FLOP counting) sizes are traced tensors.
        padding = int(dilation * (kernel.shape[2] - 1) // 2)
    _check_geometry("involution2d", input.shape, kernel.shape, "kernel map", stride, padding, dilation)
    input, kernel = _autocast(input, kernel)
    backend = _resolve_backend(backend, input)
    if backend == "reference" or torch.onnx.is_in_onnx_export():
        return involution2d_reference(input, kernel, stride, padding, dilation)
    return aggregate(input, kernel, stride, padding, dilation, backend)


def local_correlation(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Dot products of each query with the keys in its K x K window, per channel group.

    ``query`` (B, C, Ho, Wo) sits at the output pixels, ``key`` (B, C, H, W) at the input pixels (the
    windows are placed as in ``involution2d``). Returns a kernel (B, G, K, K, Ho, Wo) with
    ``[b, g, u, v, i, j] = sum over c in group g of query[b, c, i, j] * key[b, c, i*s + u*d - p, j*s + v*d - p]``
    (zero outside the key), without materialising K*K copies of the keys.
    """
    _check_tensors("local_correlation", ("query", query, "(B, C, Ho, Wo)"), ("key", key, "(B, C, H, W)"))
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"local_correlation: kernel_size must be a positive int, got {kernel_size!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"local_correlation: groups must be a positive int, got {groups!r}")
    if query.shape[:2] != key.shape[:2]:
        raise ValueError(
            f"local_correlation: query {tuple(query.shape)} and key {tuple(key.shape)} differ in batch or channels"
        )
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    kernel_shape = (query.shape[0], groups, kernel_size, kernel_size) + tuple(query.shape[2:])
    _check_geometry("local_correlation", key.shape, kernel_shape, "query", stride, padding, dilation)
    query, key = _autocast(query, key)
    backend = _resolve_backend(backend, key)
    if backend == "reference" or torch.onnx.is_in_onnx_export():
        return local_correlation_reference(query, key, kernel_size, groups, stride, padding, dilation)
    return correlate(query, key, kernel_size, groups, stride, padding, dilation, backend)


def fused_involution2d(
    input: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    kernel_size: int,
    groups: int,
    stride: int = 1,
    padding: Optional[int] = None,
    dilation: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """``involution2d(input, kernel)`` with ``kernel = conv1x1(features, weight, bias)`` viewed (B, G, K, K, Ho, Wo).

    ``features`` (B, R, Ho, Wo) are the reduced features at the output pixels; ``weight`` (G*K*K, R) (or a 1x1
    conv's (G*K*K, R, 1, 1)) and ``bias`` (G*K*K,) generate the kernel, rows ordered (group, u, v) as
    ``Involution2d``'s conv2. On the Triton backend (float16, bfloat16, float32) one kernel generates each tile's
    weights and aggregates, so the kernel map never goes to memory, and the backward recomputes it. On the cpp
    backend (every dtype) the kernels generate each output row's weights where they need them, forward and
    backward, and the kernel map's gradient goes straight into those of features, weight and bias. The other
    backends compute the kernel map with a convolution and call ``involution2d``.
    """
    _check_tensors("fused_involution2d", ("input", input, "(B, C, H, W)"), ("features", features, "(B, R, Ho, Wo)"))
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        raise ValueError("fused_involution2d: weight must be a (G*K*K, R) or (G*K*K, R, 1, 1) tensor")
    weight = weight.flatten(1)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    rows = groups * kernel_size**2
    if weight.shape != (rows, features.shape[1]) or bias.shape != (rows,):
        raise ValueError(
            f"fused_involution2d: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} must be ({rows}, "
            f"{features.shape[1]}) and ({rows},) for {groups} groups of {kernel_size}x{kernel_size} kernels from "
            f"{features.shape[1]} feature channels"
        )
    if len({t.dtype for t in (input, features, weight, bias)}) > 1 and not _autocast_enabled(input):
        raise TypeError("fused_involution2d: input, features, weight and bias must share one dtype")
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    kernel_shape = (features.shape[0], groups, kernel_size, kernel_size) + tuple(features.shape[2:])
    _check_geometry("fused_involution2d", input.shape, kernel_shape, "features", stride, padding, dilation)
    if _autocast_enabled(input):
        dtype = torch.get_autocast_dtype(input.device.type)
        input, features, weight, bias = (t.to(dtype) for t in (input, features, weight, bias))
    backend = _resolve_backend(backend, input)
    fused_kernels = backend == "cpp" or (backend == "triton" and input.dtype != torch.float64)
    if fused_kernels and not torch.onnx.is_in_onnx_export():
        return fused_aggregate(input, features, weight, bias, kernel_size, groups, stride, padding, dilation, backend)
    kernel = _generated_kernel(features, weight, bias, kernel_size, groups)
    return involution2d(input, kernel, stride, padding, dilation, backend)


def fusion_pays(backend: str, input: torch.Tensor, reduced: int, group_channels: int) -> bool:
    """Whether ``fused_involution2d`` is faster than a 1x1 convolution writing the kernel map and the aggregation
    reading it, for ``input`` on ``backend``: on the cpp backend where generating the kernel takes at most twice
    the aggregation's multiply-adds (``reduced`` <= 2 * ``group_channels``), as measured on RedNet-50's and the
    Fashion-MNIST RedNet-26's layers (benchmarks/RESULTS.md); beyond that a convolution over the whole batch is
    the faster matrix product. (The Triton kernels have not been timed on a GPU yet.)"""
    return _resolve_backend(backend, input) == "cpp" and reduced <= 2 * group_channels


def _generated_kernel(features, weight, bias, kernel_size: int, groups: int) -> torch.Tensor:
    """The kernel map (B, G, K, K, Ho, Wo) a 1x1 convolution generates from (B, R, Ho, Wo) features."""
    kernel = torch.nn.functional.conv2d(features, weight[:, :, None, None], bias)
    return kernel.unflatten(1, (groups, kernel_size, kernel_size))


def _check_tensors(op: str, *named_tensors) -> None:
    """named_tensors: (name, tensor, layout) with layouts like "(B, C, H, W)"."""
    for name, tensor, layout in named_tensors:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating point, got {tensor.dtype}")
        rank = len(layout.split(","))
        if tensor.dim() != rank:
            raise ValueError(f"{op}: {name} must be {rank}-D {layout}, got shape {tuple(tensor.shape)}")
    (first_name, first, _), (second_name, second, _) = named_tensors
    if first.device != second.device:
        raise ValueError(f"{op}: {first_name} is on {first.device} but {second_name} is on {second.device}")
    if first.dtype != second.dtype and not _autocast_enabled(first):
        raise TypeError(
            f"{op}: mixed dtypes, {first_name} is {first.dtype} but {second_name} is {second.dtype} "
            "(cast one, or run under torch.autocast)"
        )


def _check_geometry(op, input_shape, kernel_shape, map_name, stride, padding, dilation) -> None:
    batch, channels, height, width = input_shape
    kernel_batch, groups, kernel_h, kernel_w, map_h, map_w = kernel_shape
    for name, value, minimum in (("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0)):
        if isinstance(value, (bool, float)) or not hasattr(value, "__index__") or value < minimum:
            raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    if kernel_h != kernel_w:
        raise ValueError(f"{op}: kernel must be square, got {kernel_h}x{kernel_w}")
    if kernel_h % 2 == 0:
        raise ValueError(f"{op}: kernel size must be odd, got K={kernel_h}")
    if kernel_batch != batch:
        raise ValueError(f"{op}: batch sizes differ, input has {batch} but kernel has {kernel_batch}")
    if groups < 1 or channels % groups:
        raise ValueError(f"{op}: channels C={channels} are not divisible by the kernel's groups G={groups}")
    reach = dilation * (kernel_h - 1)
    out_h = (height + 2 * padding - reach - 1) // stride + 1
    out_w = (width + 2 * padding - reach - 1) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: input {height}x{width} with padding {padding} is smaller than the "
            f"{kernel_h}x{kernel_h} kernel's reach (dilation {dilation})"
        )
    if (map_h, map_w) != (out_h, out_w):
        raise ValueError(
            f"{op}: {map_name} is {map_h}x{map_w} but the output is {out_h}x{out_w} "
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


def canonical_backend(backend: str, owner: str = "involution") -> str:
    """`backend` checked against BACKENDS, with a former name replaced by its current one (and a warning)."""
    if backend in RENAMED_BACKENDS:
        current = RENAMED_BACKENDS[backend]
        warnings.warn(
            f"{owner}: backend={backend!r} is deprecated, use backend={current!r} (the same path: plain torch ops, "
            "any device)",
            DeprecationWarning,
            stacklevel=3,
        )
        return current
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: unknown backend {backend!r}, expected one of {BACKENDS}")
    return backend


def _resolve_backend(backend: str, input: torch.Tensor) -> str:
    backend = canonical_backend(backend)
    if backend == "auto":
        if input.is_cuda and _triton_available():
            return "triton"
        return "cpp" if input.device.type == "cpu" and cpp_ops.available() else "torch"
    if backend == "cpp" and (input.device.type != "cpu" or not cpp_ops.available()):
        raise ValueError(
            f"involution: backend='cpp' needs CPU tensors and a C++ compiler (got a tensor on {input.device}; "
            f"compiled kernels {'loaded' if cpp_ops.available() else 'unavailable'})"
        )
    if backend == "triton" and input.device.type != "cuda" and not _triton_interpreting():
        raise ValueError(
            "involution: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before triton "
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
    return cpp_ops if backend == "cpp" else torch_ops


def _empty_result(shape, like: torch.Tensor, backend: str) -> torch.Tensor:
    """The fake kernels' output, with the strides the backend's real one has (torch.compile relies on them): in
    the memory order of `like` (the input, kernel or query the result belongs to) on the cpp backend."""
    if backend == "cpp":
        return cpp_ops.empty_result(tuple(shape), like)
    return like.new_empty(shape)


def _in_order_of(result: torch.Tensor, like: torch.Tensor, backend: str) -> torch.Tensor:
    return cpp_ops.in_order_of(result, like) if backend == "cpp" else result


@torch.library.custom_op("involution::aggregate", mutates_args=())
def aggregate(
    input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int, backend: str
) -> torch.Tensor:
    return _in_order_of(_implementation(backend).forward(input, kernel, stride, padding, dilation), input, backend)


@aggregate.register_fake
def _(input, kernel, stride, padding, dilation, backend):
    return _empty_result(input.shape[:2] + kernel.shape[-2:], input, backend)


@torch.library.custom_op("involution::aggregate_grad_input", mutates_args=())
def aggregate_grad_input(
    grad_out: torch.Tensor,
    kernel: torch.Tensor,
    input: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    backend: str,
) -> torch.Tensor:
    grad = _implementation(backend).grad_input(grad_out, kernel, tuple(input.shape[-2:]), stride, padding, dilation)
    return _in_order_of(grad, input, backend)


@aggregate_grad_input.register_fake
def _(grad_out, kernel, input, stride, padding, dilation, backend):
    return _empty_result(input.shape, input, backend)


@torch.library.custom_op("involution::aggregate_grad_kernel", mutates_args=())
def aggregate_grad_kernel(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    kernel: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    backend: str,
) -> torch.Tensor:
    grad = _implementation(backend).grad_kernel(
        grad_out, input, kernel.shape[2], kernel.shape[1], stride, padding, dilation
    )
    return _in_order_of(grad, kernel, backend)


@aggregate_grad_kernel.register_fake
def _(grad_out, input, kernel, stride, padding, dilation, backend):
    return _empty_result(kernel.shape, kernel, backend)


def _setup_context(ctx, inputs, output):
    input, kernel, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(input, kernel)
    ctx.geometry = (stride, padding, dilation, backend)


def _backward(ctx, grad_out):
    input, kernel = ctx.saved_tensors
    grad_input = grad_kernel = None
    if ctx.geometry[-1] == "cpp" and all(ctx.needs_input_grad[:2]):
        grad_out = cpp_ops.in_kernel_order(grad_out)  # read by both kernels: copied once at most
    if ctx.needs_input_grad[0]:
        grad_input = aggregate_grad_input(grad_out, kernel, input, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_kernel = aggregate_grad_kernel(grad_out, input, kernel, *ctx.geometry)
    return grad_input, grad_kernel, None, None, None, None


aggregate.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("involution::correlate", mutates_args=())
def correlate(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
    backend: str,
) -> torch.Tensor:
    # The correlation is the aggregation's gradient w.r.t. its kernel, with the query as grad_out.
    correlation = _implementation(backend).grad_kernel(query, key, kernel_size, groups, stride, padding, dilation)
    return _in_order_of(correlation, query, backend)


@correlate.register_fake
def _(query, key, kernel_size, groups, stride, padding, dilation, backend):
    return _empty_result((query.shape[0], groups, kernel_size, kernel_size) + tuple(query.shape[2:]), query, backend)


def _setup_correlate_context(ctx, inputs, output):
    query, key, _, _, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(query, key)
    ctx.geometry = (stride, padding, dilation, backend)


def _correlate_backward(ctx, grad_kernel):
    query, key = ctx.saved_tensors
    grad_query = grad_key = None
    if ctx.geometry[-1] == "cpp" and all(ctx.needs_input_grad[:2]):
        grad_kernel = cpp_ops.in_kernel_order(grad_kernel)  # read by both kernels: copied once at most
    if ctx.needs_input_grad[0]:
        grad_query = aggregate(key, grad_kernel, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_key = aggregate_grad_input(query, grad_kernel, key, *ctx.geometry)
    return grad_query, grad_key, None, None, None, None, None, None


correlate.register_autograd(_correlate_backward, setup_context=_setup_correlate_context)


@torch.library.custom_op("involution::fused_aggregate", mutates_args=())
def fused_aggregate(
    input: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
    backend: str,
) -> torch.Tensor:
    out = _implementation(backend).fused_forward(
        input, features, weight, bias, kernel_size, groups, stride, padding, dilation
    )
    return _in_order_of(out, input, backend)


@fused_aggregate.register_fake
def _(input, features, weight, bias, kernel_size, groups, stride, padding, dilation, backend):
    return _empty_result(input.shape[:2] + features.shape[-2:], input, backend)


@torch.library.custom_op("involution::fused_aggregate_grad_input", mutates_args=())
def fused_aggregate_grad_input(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """The cpp backend's: the kernel rows regenerated where the input gradient reads them."""
    grad = cpp_ops.fused_grad_input(
        grad_out, features, weight, bias, kernel_size, groups, tuple(input.shape[-2:]), stride, padding, dilation
    )
    return cpp_ops.in_order_of(grad, input)


@fused_aggregate_grad_input.register_fake
def _(grad_out, input, features, weight, bias, kernel_size, groups, stride, padding, dilation):
    return _empty_result(input.shape, input, "cpp")


@torch.library.custom_op("involution::fused_aggregate_grad_generation", mutates_args=())
def fused_aggregate_grad_generation(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cpp backend's gradients of features, weight and bias: the kernel's gradient is consumed as it is
    computed, never stored."""
    grad_features, grad_weight, grad_bias = cpp_ops.fused_grad_generation(
        grad_out, input, features, weight, bias, kernel_size, groups, stride, padding, dilation
    )
    return cpp_ops.in_order_of(grad_features, features), grad_weight, grad_bias


@fused_aggregate_grad_generation.register_fake
def _(grad_out, input, features, weight, bias, kernel_size, groups, stride, padding, dilation):
    return _empty_result(features.shape, features, "cpp"), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


def _setup_fused_context(ctx, inputs, output):
    input, features, weight, bias, kernel_size, groups, stride, padding, dilation, backend = inputs
    ctx.save_for_backward(input, features, weight, bias)
    ctx.generation = (kernel_size, groups)
    ctx.geometry = (stride, padding, dilation, backend)


def _fused_backward(ctx, grad_out):
    """cpp: the fused backward kernels. Triton: recomputes the kernel map, then the aggregation's gradients and
    the 1x1 generation's."""
    input, features, weight, bias = ctx.saved_tensors
    if ctx.geometry[-1] == "cpp":
        return _fused_backward_cpp(ctx, grad_out, input, features, weight, bias)
    kernel = _generated_kernel(features, weight, bias, *ctx.generation)
    grad_input = grad_features = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = aggregate_grad_input(grad_out, kernel, input, *ctx.geometry)
    if any(ctx.needs_input_grad[1:4]):
        grad_kernel = aggregate_grad_kernel(grad_out, input, kernel, *ctx.geometry).flatten(1, 3)  # (B, G*K*K, Ho, Wo)
        if ctx.needs_input_grad[1]:
            grad_features = torch.einsum("or,bohw->brhw", weight, grad_kernel)
        if ctx.needs_input_grad[2]:
            grad_weight = torch.einsum("bohw,brhw->or", grad_kernel, features)
        if ctx.needs_input_grad[3]:
            grad_bias = grad_kernel.sum((0, 2, 3))
    return grad_input, grad_features, grad_weight, grad_bias, None, None, None, None, None, None


def _fused_backward_cpp(ctx, grad_out, input, features, weight, bias):
    grad_input = grad_features = grad_weight = grad_bias = None
    operands = (input, features, weight, bias, *ctx.generation, *ctx.geometry[:3])
    if ctx.needs_input_grad[0] and any(ctx.needs_input_grad[1:4]):
        grad_out = cpp_ops.in_kernel_order(grad_out)  # read by both kernels: copied once at most
    if ctx.needs_input_grad[0]:
        grad_input = fused_aggregate_grad_input(grad_out, *operands)
    if any(ctx.needs_input_grad[1:4]):
        grad_features, grad_weight, grad_bias = fused_aggregate_grad_generation(grad_out, *operands)
    return grad_input, grad_features, grad_weight, grad_bias, None, None, None, None, None, None


fused_aggregate.register_autograd(_fused_backward, setup_context=_setup_fused_context)
