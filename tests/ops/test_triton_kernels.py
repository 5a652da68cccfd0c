"""The Triton launchers (forward, grad_input, grad_kernel) against the unfold reference and its autograd.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1
before triton is imported), which is slow: shapes and example counts are kept small.
"""

import os

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 set before triton is imported", allow_module_level=True
    )

import triton
from hypothesis import given, settings
from hypothesis import strategies as st

from involution.ops import triton_kernels
from involution.ops.reference import involution2d_reference

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def make_case(batch, channels, groups, height, width, k, stride, padding, dilation, dtype=torch.float32):
    out_h = output_size(height, k, stride, padding, dilation)
    out_w = output_size(width, k, stride, padding, dilation)
    x = torch.randn(batch, channels, height, width, device=DEVICE).to(dtype)
    kernel = torch.randn(batch, groups, k, k, out_h, out_w, device=DEVICE).to(dtype)
    grad_out = torch.randn(batch, channels, out_h, out_w, device=DEVICE).to(dtype)
    return x, kernel, grad_out


def reference_results(x, kernel, grad_out, stride, padding, dilation, dtype=torch.float64):
    """Output and both gradients of the reference, computed in `dtype` from the (possibly rounded) inputs."""
    x = x.to(dtype).requires_grad_()
    kernel = kernel.to(dtype).requires_grad_()
    out = involution2d_reference(x, kernel, stride, padding, dilation)
    grad_x, grad_kernel = torch.autograd.grad(out, (x, kernel), grad_out.to(dtype))
    return out.detach(), grad_x, grad_kernel


def triton_results(x, kernel, grad_out, stride, padding, dilation):
    groups, k = kernel.shape[1], kernel.shape[2]
    out = triton_kernels.forward(x, kernel, stride, padding, dilation)
    grad_x = triton_kernels.grad_input(grad_out, kernel, tuple(x.shape[2:]), stride, padding, dilation)
    grad_kernel = triton_kernels.grad_kernel(grad_out, x, k, groups, stride, padding, dilation)
    return out, grad_x, grad_kernel


def assert_matches(actual, expected, dtype, atol, rtol):
    for name, a, e in zip(("output", "grad_input", "grad_kernel"), actual, expected):
        assert a.dtype == dtype, name
        assert a.shape == e.shape, name
        assert a.is_contiguous(), name
        torch.testing.assert_close(a.to(e.dtype), e, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@st.composite
def shapes(draw):
    k = draw(st.sampled_from([1, 3, 5, 7, 9]))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    height = draw(st.integers(1, 13))
    width = draw(st.integers(1, 13))
    # Explicit paddings must still leave Ho, Wo >= 1: the padded input has to cover one receptive field.
    min_padding = max(0, -(-(dilation * (k - 1) + 1 - min(height, width)) // 2))
    default_padding = dilation * (k - 1) // 2
    padding = draw(st.one_of(st.just(default_padding), st.integers(min_padding, min_padding + 2)))
    groups = draw(st.integers(1, 4))
    channels_per_group = draw(st.integers(1, 3))
    batch = draw(st.integers(1, 2))
    return batch, groups * channels_per_group, groups, height, width, k, stride, padding, dilation


@settings(max_examples=80, deadline=None)
@given(shape=shapes())
def test_random_shapes_match_reference(shape):
    *sizes, stride, padding, dilation = shape
    x, kernel, grad_out = make_case(*sizes, stride, padding, dilation)
    expected = reference_results(x, kernel, grad_out, stride, padding, dilation)
    actual = triton_results(x, kernel, grad_out, stride, padding, dilation)
    assert_matches(actual, expected, torch.float32, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "dtype, atol, rtol",
    [
        (torch.float64, 1e-12, 1e-12),
        (torch.float32, 1e-5, 1e-5),
        (torch.float16, 1e-2, 2e-3),
        (torch.bfloat16, 2e-2, 2e-2),
    ],
)
@pytest.mark.parametrize("k, stride, dilation", [(3, 1, 1), (5, 2, 2)])
def test_dtypes_match_reference(dtype, atol, rtol, k, stride, dilation):
    padding = dilation * (k - 1) // 2
    x, kernel, grad_out = make_case(2, 8, 2, 9, 11, k, stride, padding, dilation, dtype=dtype)
    # The reference runs in fp64 on the same rounded inputs, so only the kernels' own rounding is measured.
    expected = reference_results(x, kernel, grad_out, stride, padding, dilation)
    actual = triton_results(x, kernel, grad_out, stride, padding, dilation)
    assert_matches(actual, expected, dtype, atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "batch, channels, groups, height, width, k, stride, padding, dilation",
    [
        (1, 6, 3, 7, 9, 3, 2, 1, 1),  # odd sizes, stride 2
        (1, 4, 4, 7, 9, 3, 2, 2, 2),  # depthwise, dilation 2, stride 2
        (2, 3, 1, 8, 5, 5, 1, 4, 2),  # one group, dilation 2
        (1, 2, 2, 1, 1, 1, 1, 0, 1),  # 1x1 image, 1x1 kernel
    ],
)
def test_layouts_without_copies(batch, channels, groups, height, width, k, stride, padding, dilation):
    x, kernel, grad_out = make_case(batch, channels, groups, height, width, k, stride, padding, dilation)
    expected = reference_results(x, kernel, grad_out, stride, padding, dilation)

    x_channels_last = x.to(memory_format=torch.channels_last)
    grad_out_channels_last = grad_out.to(memory_format=torch.channels_last)
    # Kernel stored as (B, Ho, Wo, G, K, K) and viewed as (B, G, K, K, Ho, Wo).
    kernel_permuted = kernel.permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2)
    # Kernel stored with Ho and Wo swapped.
    kernel_transposed = kernel.transpose(-1, -2).contiguous().transpose(-1, -2)
    # Input that is a strided slice of a wider tensor.
    wide = torch.zeros(batch, channels, height, 2 * width, device=DEVICE)
    wide[..., ::2] = x
    x_sliced = wide[..., ::2]
    if height * width > 1:
        assert not x_sliced.is_contiguous() and not kernel_permuted.is_contiguous()

    for x_variant, kernel_variant, grad_out_variant in [
        (x_channels_last, kernel_permuted, grad_out_channels_last),
        (x_sliced, kernel_transposed, grad_out_channels_last),
    ]:
        actual = triton_results(x_variant, kernel_variant, grad_out_variant, stride, padding, dilation)
        assert_matches(actual, expected, torch.float32, atol=1e-5, rtol=1e-5)


def test_unsupported_dtype_raises():
    x = torch.zeros(1, 2, 3, 3, dtype=torch.int32, device=DEVICE)
    kernel = torch.zeros(1, 1, 1, 1, 3, 3, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="int32"):
        triton_kernels.forward(x, kernel, 1, 0, 1)


def test_int32_offset_overflow_raises():
    # A meta tensor whose rows are 2**31 elements apart: nothing is allocated, the launcher refuses before launching.
    x = torch.empty_strided((1, 1, 2, 2), (4, 4, 2**31, 1), device="meta")
    kernel = torch.empty(1, 1, 1, 1, 2, 2, device="meta")
    with pytest.raises(ValueError, match="int32"):
        triton_kernels.forward(x, kernel, 1, 0, 1)


@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 2e-2, 2e-2)])
def test_public_op_with_triton_backend_through_autograd(dtype, atol, rtol):
    from involution import involution2d

    x, kernel, grad_out = make_case(2, 8, 2, 7, 9, 5, 2, 2, 1, dtype)
    x.requires_grad_()
    kernel.requires_grad_()
    out = involution2d(x, kernel, stride=2, backend="triton")
    actual = (out, *torch.autograd.grad(out, (x, kernel), grad_out))
    assert_matches(actual, reference_results(x.detach(), kernel.detach(), grad_out, 2, 2, 1), dtype, atol, rtol)


@pytest.mark.parametrize("output", range(3))
def test_every_autotuning_candidate_is_exact(monkeypatch, output):
    """Autotuning may pick any candidate on a GPU: each one, forced, gives the reference's results."""
    kernel, candidates = [
        (triton_kernels._forward_kernel, triton_kernels.PIXEL_TILE_CANDIDATES),
        (triton_kernels._grad_input_kernel, triton_kernels.PIXEL_TILE_CANDIDATES),
        (triton_kernels._grad_kernel_kernel, triton_kernels.TAP_TILE_CANDIDATES),
    ][output]
    x, weights, grad_out = make_case(1, 24, 2, 7, 9, 3, 2, 1, 1)
    expected = reference_results(x, weights, grad_out, 2, 1, 1)[output]
    launchers = [
        lambda: triton_kernels.forward(x, weights, 2, 1, 1),
        lambda: triton_kernels.grad_input(grad_out, weights, (7, 9), 2, 1, 1),
        lambda: triton_kernels.grad_kernel(grad_out, x, 3, 2, 2, 1, 1),
    ]
    for block, warps in candidates:
        monkeypatch.setattr(kernel, "configs", [triton.Config({"BLOCK_P": block}, num_warps=warps)])
        kernel.cache.clear()
        actual = launchers[output]()
        message = f"BLOCK_P={block}: "
        torch.testing.assert_close(actual.double(), expected, atol=1e-5, rtol=1e-5, msg=lambda m, s=message: s + m)
    kernel.cache.clear()


def test_opcheck_triton_backend():
    x, kernel, _ = make_case(2, 4, 2, 7, 5, 3, 2, 1, 1)
    torch.library.opcheck(torch.ops.involution.aggregate.default, (x, kernel, 2, 1, 1, "triton"))
