"""The public op against the unfold reference: every non-Triton backend, shapes, dtypes, layouts, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from involution import involution2d
from involution.ops import involution2d_reference

# (dtype, atol, rtol) against the fp32 reference on the same rounded inputs.
HALF_TOLERANCES = [(torch.float16, 1e-2, 2e-3), (torch.bfloat16, 5e-2, 1e-2)]


def output_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def random_problem(b, c, g, h, w, k, stride, dilation, padding=None, dtype=torch.float64):
    if padding is None:
        padding = dilation * (k - 1) // 2
    out_h, out_w = output_size(h, k, stride, padding, dilation), output_size(w, k, stride, padding, dilation)
    x = torch.randn(b, c, h, w, dtype=dtype, requires_grad=True)
    kernel = torch.randn(b, g, k, k, out_h, out_w, dtype=dtype, requires_grad=True)
    return x, kernel, padding


def outputs_and_grads(x, kernel, stride, padding, dilation, backend):
    if backend == "reference":
        out = involution2d_reference(x, kernel, stride, padding, dilation)
    else:
        out = involution2d(x, kernel, stride, padding, dilation, backend=backend)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
    return (out, *torch.autograd.grad(out, (x, kernel), grad_out))


def assert_all_close(actual, expected, atol=1e-10, rtol=1e-7):
    for name, a, e in zip(("output", "grad input", "grad kernel"), actual, expected):
        torch.testing.assert_close(a.float(), e.float(), atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


@st.composite
def problems(draw):
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 3, 5, 7, 9]))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.one_of(st.none(), st.integers(0, 4)))
    reach = dilation * (k - 1) + 1 - 2 * (dilation * (k - 1) // 2 if padding is None else padding)
    h = draw(st.integers(max(1, reach), max(13, reach + 4)))
    w = draw(st.integers(max(1, reach), max(13, reach + 4)))
    return draw(st.integers(1, 2)), channels, groups, h, w, k, stride, dilation, padding


@settings(max_examples=60, deadline=None)
@given(problems())
def test_torch_backend_matches_reference_on_random_shapes(problem):
    b, c, g, h, w, k, stride, dilation, padding = problem
    x, kernel, padding = random_problem(b, c, g, h, w, k, stride, dilation, padding)
    expected = outputs_and_grads(x, kernel, stride, padding, dilation, "reference")
    assert_all_close(outputs_and_grads(x, kernel, stride, padding, dilation, "torch"), expected)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_gradcheck_float64(backend, stride, dilation):
    x, kernel, padding = random_problem(2, 4, 2, 7, 6, 3, stride, dilation)
    assert torch.autograd.gradcheck(
        lambda a, b: involution2d(a, b, stride, padding, dilation, backend=backend), (x, kernel)
    )


@pytest.mark.parametrize("dtype,atol,rtol", HALF_TOLERANCES)
def test_half_precision_torch_backend(dtype, atol, rtol):
    x, kernel, padding = random_problem(2, 32, 2, 9, 11, 7, 2, 1, dtype=dtype)
    actual = outputs_and_grads(x, kernel, 2, padding, 1, "torch")
    assert all(t.dtype == dtype for t in actual)
    x32 = x.detach().float().requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    assert_all_close(actual, outputs_and_grads(x32, kernel32, 2, padding, 1, "reference"), atol, rtol)


def test_channels_last_and_non_contiguous_inputs():
    x, kernel, padding = random_problem(2, 8, 2, 9, 7, 5, 2, 1)
    expected = outputs_and_grads(x, kernel, 2, padding, 1, "reference")
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    # The same kernel values behind a permuted (non-contiguous) layout.
    kernel_nc = kernel.detach().permute(0, 1, 3, 2, 5, 4).contiguous().permute(0, 1, 3, 2, 5, 4).requires_grad_()
    assert not kernel_nc.is_contiguous()
    assert_all_close(outputs_and_grads(x_cl, kernel_nc, 2, padding, 1, "torch"), expected)


def test_autocast_runs_in_the_autocast_dtype():
    x, kernel, padding = random_problem(1, 8, 2, 8, 8, 3, 1, 1, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = involution2d(x, kernel.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), involution2d_reference(x, kernel, 1, padding, 1), atol=0.1, rtol=0.02)


def test_opcheck_fake_kernels_and_autograd():
    x, kernel, padding = random_problem(2, 4, 2, 7, 5, 3, 2, 1, dtype=torch.float32)
    torch.library.opcheck(torch.ops.involution.aggregate.default, (x, kernel, 2, padding, 1, "torch"))


def test_torch_compile_fullgraph_matches_eager():
    x, kernel, padding = random_problem(2, 8, 2, 9, 9, 3, 2, 1, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: involution2d(a, b, stride=2) * 2, fullgraph=True)
    actual = outputs_and_grads_of(compiled, x, kernel)
    expected = outputs_and_grads_of(lambda a, b: involution2d(a, b, stride=2) * 2, x, kernel)
    assert_all_close(actual, expected, atol=1e-5, rtol=1e-5)


def outputs_and_grads_of(fn, x, kernel):
    out = fn(x, kernel)
    return (out, *torch.autograd.grad(out.sum(), (x, kernel)))


def test_former_backend_name_cpu_still_works_with_a_deprecation_warning():
    x, kernel, padding = random_problem(1, 4, 2, 6, 5, 3, 1, 1)
    with pytest.warns(DeprecationWarning, match="backend='cpu' is deprecated, use backend='torch'"):
        out = involution2d(x, kernel, backend="cpu")
    torch.testing.assert_close(out, involution2d(x, kernel, backend="torch"))


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, kernel, _ = random_problem(1, 4, 1, 5, 5, 3, 1, 1)
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        involution2d(x, kernel, backend="triton")


def good_problem():
    return torch.randn(2, 8, 6, 6), torch.randn(2, 2, 3, 3, 6, 6)


@pytest.mark.parametrize(
    "change,error,message",
    [
        (lambda x, k: (x[0], k), ValueError, r"input must be 4-D \(B, C, H, W\), got shape \(8, 6, 6\)"),
        (lambda x, k: (x, k[0]), ValueError, r"kernel must be 6-D"),
        (lambda x, k: (x[:, :7], k), ValueError, r"channels C=7 are not divisible by the kernel's groups G=2"),
        (lambda x, k: (x, k[..., :5, :5]), ValueError, r"kernel map is 5x5 but the output is 6x6"),
        (lambda x, k: (x, torch.randn(2, 2, 4, 4, 6, 6)), ValueError, r"kernel size must be odd, got K=4"),
        (lambda x, k: (x, k[:, :, :, :1]), ValueError, r"kernel must be square, got 3x1"),
        (lambda x, k: (x, k[:1]), ValueError, r"batch sizes differ, input has 2 but kernel has 1"),
        (lambda x, k: (x, k.double()), TypeError, r"mixed dtypes, input is torch.float32 but kernel is torch.float64"),
        (lambda x, k: (x.long(), k), TypeError, r"input must be floating point"),
        (lambda x, k: (x.numpy(), k), TypeError, r"input must be a torch.Tensor, got ndarray"),
        (lambda x, k: (x, k.to("meta")), ValueError, r"input is on cpu but kernel is on meta"),
    ],
)
def test_bad_input_names_the_problem(change, error, message):
    x, kernel = change(*good_problem())
    with pytest.raises(error, match=message):
        involution2d(x, kernel)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"stride": 0}, r"stride must be an int >= 1, got 0"),
        ({"dilation": 1.5}, r"dilation must be an int >= 1, got 1.5"),
        ({"padding": -1}, r"padding must be an int >= 0, got -1"),
        ({"backend": "cuda"}, r"unknown backend 'cuda'"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        involution2d(*good_problem(), **kwargs)


def test_input_smaller_than_the_kernel_reach():
    with pytest.raises(ValueError, match=r"input 2x2 with padding 0 is smaller than the 5x5 kernel's reach"):
        involution2d(torch.randn(1, 2, 2, 2), torch.randn(1, 1, 5, 5, 1, 1), padding=0)


def test_onnx_export_goes_through_the_reference(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from involution import Involution2d

    module = Involution2d(16, kernel_size=3, stride=2, group_channels=4).eval()
    x = torch.randn(1, 16, 9, 9)
    path = tmp_path / "involution.onnx"
    torch.onnx.export(module, (x,), path, dynamo=True)
    assert "Mul" in {node.op_type for node in onnx.load(path).graph.node}
    session = onnxruntime.InferenceSession(str(path))
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(actual), module(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width,stride", [(51, 1), (51, 2), (9, 1)])
def test_torch_backend_both_memory_layouts(width, stride):
    """Long output rows run in NCHW order, short ones batch-innermost (involution/ops/torch_ops.py)."""
    x, kernel, padding = random_problem(2, 6, 3, 5, width, 5, stride, 1)
    expected = outputs_and_grads(x, kernel, stride, padding, 1, "reference")
    assert_all_close(outputs_and_grads(x, kernel, stride, padding, 1, "torch"), expected)
