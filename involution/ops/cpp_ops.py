"""The compiled CPU kernels (backend "cpp"): forward, grad_input and grad_kernel in one pass over the taps, and
the same with the kernel generated inside them from reduced features (fused_forward, fused_grad_input,
fused_grad_generation: the kernel map and its gradient never stored).

``cpu_kernels.cpp`` is compiled on first use (about 10 s, once per machine and torch version) into
``build/cpp_ops/`` of the source tree, or of ``$INVOLUTION_BUILD_DIR``; ``make setup`` builds it ahead. Where
no compiler works, ``available()`` is False after one warning and backend "auto" keeps the torch path.
The kernels take contiguous channels-last float32/float64 tensors (see _PIXEL_MAJOR); half precision is computed
in float32 (fp32 accumulation, as every backend) and cast back.
"""

import hashlib
import logging
import os
import platform
import warnings
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
_REPOSITORY = Path(__file__).resolve().parents[2]
_CFLAGS = ["-O3", "-march=native", "-fopenmp"]


def build_root() -> Path:
    """Where compiled kernels go: ``$INVOLUTION_BUILD_DIR``, else ``build/`` of the source tree."""
    return Path(os.environ.get("INVOLUTION_BUILD_DIR", _REPOSITORY / "build"))


def build_tag(source_text: bytes) -> str:
    """One build per source, flags, torch version and CPU: the build uses this CPU's instructions (-march=native)."""
    identity = [source_text, " ".join(_CFLAGS).encode(), torch.__version__.encode(), _cpu_model().encode()]
    return hashlib.sha1(b"".join(identity)).hexdigest()[:12]


def compile_extension(name: str, source: Path, directory: Path) -> None:
    """Compiles `source` as the extension `name` in `directory` (or finds it built there) and loads its operators."""
    # The import logs a CUDA_HOME guess that is irrelevant to a CPU build.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    directory.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name,
        [str(source)],
        extra_cflags=_CFLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        with_cuda=False,
        is_python_module=False,
    )


def _cpu_model() -> str:
    """The CPU's model and instruction-set flags (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line for line in lines if line.startswith("model name")), "")
    return model + next((line for line in lines if line.startswith("flags")), "")


_loaded = None  # whether the kernels are loaded in this process; None until the first call of available()


@torch.compiler.assume_constant_result  # torch.compile takes the answer as it is, without tracing the build
def available() -> bool:
    """Compiles (or finds) and loads the kernels once per process; False (after one warning line) where that fails."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> bool:
    try:
        directory = build_root() / "cpp_ops" / build_tag(_SOURCE.read_bytes())
        compile_extension("involution_cpu_kernels", _SOURCE, directory)
    except Exception as error:  # a missing or failing compiler: the torch path still works
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"involution: compiled CPU kernels unavailable ({reason}); using the torch path", stacklevel=2)
        return False
    return True


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# The kernels work channels-last: a 4-D (B, C, H, W) tensor as (B, H, W, C), a kernel map (B, G, K, K, Ho, Wo)
# as (B, Ho, Wo, G*K*K). This is what a channels_last model holds already (conv2's output is the kernel map),
# so there the conversions below are views. The functions return pixel-major views; op.py puts them in the
# memory order of the tensor they belong to (in_order_of), and its fake kernels say so (empty_result).
_PIXEL_MAJOR = {4: (0, 2, 3, 1), 6: (0, 4, 5, 1, 2, 3)}
_FROM_PIXEL_MAJOR = {dim: sorted(range(dim), key=order.__getitem__) for dim, order in _PIXEL_MAJOR.items()}


def pixel_major(tensor: torch.Tensor) -> bool:
    """True for a channels_last tensor (or a kernel map laid out so), which is not also contiguous."""
    return tensor.permute(_PIXEL_MAJOR[tensor.dim()]).is_contiguous() and not tensor.is_contiguous()


def empty_result(shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """An empty tensor of `shape` in `like`'s memory order: pixel-major if `like` is, else contiguous."""
    if not pixel_major(like):
        return like.new_empty(shape)
    return like.new_empty([shape[d] for d in _PIXEL_MAJOR[len(shape)]]).permute(_FROM_PIXEL_MAJOR[len(shape)])


def in_order_of(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A pixel-major result of the functions below, in `like`'s memory order (as empty_result gives it)."""
    return result if pixel_major(like) else result.contiguous()


def in_kernel_order(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the kernels' memory order: itself where it has it already, else one pixel-major copy (for a
    tensor that two kernels read, such as grad_out in the backward, which each would otherwise copy)."""
    if tensor.permute(_PIXEL_MAJOR[tensor.dim()]).is_contiguous():
        return tensor
    return _result(_pixels(tensor, tensor.dtype), tensor.dtype)


def _pixels(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype).permute(_PIXEL_MAJOR[tensor.dim()]).contiguous()


def _kernel_pixels(kernel: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _pixels(kernel, dtype).flatten(3)  # (B, Ho, Wo, G*K*K)


def _result(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Ho, Wo, ...) from a kernel -> the public shape, a pixel-major view, in `dtype`."""
    return pixels.permute(_FROM_PIXEL_MAJOR[pixels.dim()]).to(dtype)


def forward(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    dtype = _compute_dtype(input.dtype)
    groups, k = kernel.shape[1:3]
    out = torch.ops.involution_cpu.forward(
        _pixels(input, dtype), _kernel_pixels(kernel, dtype), k, groups, stride, padding, dilation
    )
    return _result(out, input.dtype)


def grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input_size: tuple, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    dtype = _compute_dtype(grad_out.dtype)
    groups, k = kernel.shape[1:3]
    grad = torch.ops.involution_cpu.grad_input(
        _pixels(grad_out, dtype), _kernel_pixels(kernel, dtype), k, groups, *input_size, stride, padding, dilation
    )
    return _result(grad, kernel.dtype)


def grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    dtype = _compute_dtype(input.dtype)
    grad = torch.ops.involution_cpu.grad_kernel(
        _pixels(grad_out, dtype), _pixels(input, dtype), kernel_size, groups, stride, padding, dilation
    )
    return _result(grad.unflatten(3, (groups, kernel_size, kernel_size)), input.dtype)


def _generation(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> tuple:
    """The fused op's generation operands as the kernels take them: features pixel-major, weight (G*K*K, R)."""
    return _pixels(features, dtype), weight.to(dtype).contiguous(), bias.to(dtype).contiguous()


def fused_forward(input, features, weight, bias, kernel_size, groups, stride, padding, dilation) -> torch.Tensor:
    dtype = _compute_dtype(input.dtype)
    out = torch.ops.involution_cpu.fused_forward(
        _pixels(input, dtype),
        *_generation(features, weight, bias, dtype),
        kernel_size,
        groups,
        stride,
        padding,
        dilation,
    )
    return _result(out, input.dtype)


def fused_grad_input(grad_out, features, weight, bias, kernel_size, groups, input_size, stride, padding, dilation):
    dtype = _compute_dtype(grad_out.dtype)
    grad = torch.ops.involution_cpu.fused_grad_input(
        _pixels(grad_out, dtype), *_generation(features, weight, bias, dtype), kernel_size, groups, *input_size,
        stride, padding, dilation,
    )  # fmt: skip
    return _result(grad, grad_out.dtype)


def fused_grad_generation(grad_out, input, features, weight, bias, kernel_size, groups, stride, padding, dilation):
    """The gradients of features (pixel-major), weight and bias."""
    dtype = _compute_dtype(input.dtype)
    grad_features, grad_weight, grad_bias = torch.ops.involution_cpu.fused_grad_generation(
        _pixels(grad_out, dtype), _pixels(input, dtype), *_generation(features, weight, bias, dtype), kernel_size,
        groups, stride, padding, dilation,
    )  # fmt: skip
    return _result(grad_features, features.dtype), grad_weight.to(weight.dtype), grad_bias.to(bias.dtype)
