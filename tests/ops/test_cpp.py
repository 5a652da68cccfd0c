"""The compiled CPU kernels (backend "cpp") against the unfold reference, and how "auto" falls back without them."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_op import HALF_TOLERANCES, assert_all_close, outputs_and_grads, random_problem

from involution import Involution2d, involution2d, local_correlation
from involution.ops import cpp_ops, local_correlation_reference

pytestmark = pytest.mark.skipif(not cpp_ops.available(), reason="no C++ compiler: the cpp backend is not built")


@st.composite
def problems(draw):
    """Group widths 1, 2, 4, 8, 16 and 32 take the kernels' fixed-width paths, 3 their generic loops; widths up to
    14 leave room for blocks of 4 pixels whose windows lie inside."""
    groups = draw(st.integers(1, 3))
    group_channels = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]))
    k = draw(st.sampled_from([1, 3, 5, 7]))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.one_of(st.none(), st.integers(0, 4)))
    reach = dilation * (k - 1) + 1 - 2 * (dilation * (k - 1) // 2 if padding is None else padding)
    h = draw(st.integers(max(1, reach), max(9, reach + 4)))
    w = draw(st.integers(max(1, reach), max(14, reach + 4)))
    return draw(st.integers(1, 2)), groups * group_channels, groups, h, w, k, stride, dilation, padding


@settings(max_examples=60, deadline=None)
@given(problems(), st.booleans(), st.sampled_from([torch.float64, torch.float32]))
def test_matches_reference_on_random_shapes(problem, channels_last, dtype):
    """float32 takes the vector paths (several pixels per pass, taps reduced 8 or 16 at a time, two groups of 8
    channels as one vector), float64 the generic loops; both are checked against the float64 reference."""
    b, c, g, h, w, k, stride, dilation, padding = problem
    x, kernel, padding = random_problem(b, c, g, h, w, k, stride, dilation, padding)
    expected = outputs_and_grads(x, kernel, stride, padding, dilation, "reference")
    x, kernel = (t.detach().to(dtype).requires_grad_() for t in (x, kernel))
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    tolerances = (1e-4, 1e-4) if dtype == torch.float32 else ()
    assert_all_close(outputs_and_grads(x, kernel, stride, padding, dilation, "cpp"), expected, *tolerances)


@pytest.mark.parametrize("group_channels", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("groups", [1, 2, 3, 5])
@pytest.mark.parametrize(
    "k,stride,dilation", [(3, 1, 1), (5, 1, 1), (7, 1, 1), (7, 2, 1), (3, 1, 2), (7, 1, 2), (5, 2, 2)]
)
def test_every_vector_path_matches_reference(group_channels, groups, k, stride, dilation):
    """Each float32 fast path on an odd-sized image wide enough for blocks of pixels and windows inside it, and
    for the kernel gradient's rows of 16 (or, with AVX2, 8) pixels (17 columns: full blocks and one pixel); single
    pixels go 4, 2 or 1 groups at a time."""
    x, kernel, padding = random_problem(2, groups * group_channels, groups, 13, 17, k, stride, dilation)
    expected = outputs_and_grads(x, kernel, stride, padding, dilation, "reference")
    x32 = x.detach().float().to(memory_format=torch.channels_last).requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    assert_all_close(outputs_and_grads(x32, kernel32, stride, padding, dilation, "cpp"), expected, 1e-4, 1e-4)


@pytest.mark.parametrize("channels,groups,width", [(8, 1, 5), (48, 3, 5), (16, 2, 13)])
@pytest.mark.parametrize(
    "k,stride,dilation,padding", [(3, 1, 1, None), (7, 1, 1, None), (7, 2, 1, None), (5, 1, 2, None), (7, 1, 1, 1)]
)
def test_kernel_gradient_with_images_in_the_lanes(channels, groups, width, k, stride, dilation, padding):
    """Rows narrower than a vector, or groups of 8 channels, in a batch of 17 images (chunks of 16, or with AVX2 of
    8, and one more) put images in the lanes; at K=7 with 2 or 3 groups the output pixels are assembled in several
    pieces."""
    x, kernel, padding = random_problem(17, channels, groups, 6, width, k, stride, dilation, padding)
    expected = outputs_and_grads(x, kernel, stride, padding, dilation, "reference")
    x32 = x.detach().float().to(memory_format=torch.channels_last).requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    assert_all_close(outputs_and_grads(x32, kernel32, stride, padding, dilation, "cpp"), expected, 1e-4, 1e-4)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("k,padding", [(7, None), (5, None), (3, None), (7, 1)])
def test_kernel_gradient_rows_in_pairs_wherever_the_threads_split(threads, k, padding):
    """The pixel lanes take two output rows per pass (at K=7 only with AVX-512): 1 thread sweeps both images (13
    rows each, so a pass must not pair an image's last row with the next image's first), 3 threads start and end
    their rows mid-image."""
    x, kernel, padding = random_problem(2, 32, 2, 13, 17, k, 1, 1, padding)
    expected = outputs_and_grads(x, kernel, 1, padding, 1, "reference")
    x32 = x.detach().float().to(memory_format=torch.channels_last).requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        computed = outputs_and_grads(x32, kernel32, 1, padding, 1, "cpp")
    finally:
        torch.set_num_threads(before)
    assert_all_close(computed, expected, 1e-4, 1e-4)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_gradcheck_float64(stride, dilation):
    x, kernel, padding = random_problem(2, 4, 2, 7, 6, 3, stride, dilation)
    assert torch.autograd.gradcheck(
        lambda a, b: involution2d(a, b, stride, padding, dilation, backend="cpp"), (x, kernel)
    )


@pytest.mark.parametrize("dtype,atol,rtol", HALF_TOLERANCES)
def test_half_precision_accumulates_in_float32(dtype, atol, rtol):
    x, kernel, padding = random_problem(2, 32, 2, 9, 11, 7, 2, 1, dtype=dtype)
    actual = outputs_and_grads(x, kernel, 2, padding, 1, "cpp")
    assert all(t.dtype == dtype for t in actual)
    x32 = x.detach().float().requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    assert_all_close(actual, outputs_and_grads(x32, kernel32, 2, padding, 1, "reference"), atol, rtol)


def test_layouts_in_and_out():
    """Channels-last (what a channels_last model holds) stays channels-last without copies, and each gradient
    takes its tensor's layout; other layouts, non-contiguous ones included, give contiguous results."""
    x, kernel, padding = random_problem(2, 16, 2, 9, 7, 5, 2, 1)
    expected = outputs_and_grads(x, kernel, 2, padding, 1, "reference")
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    kernel_pixels = kernel.detach().permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2).requires_grad_()
    actual = outputs_and_grads(x_cl, kernel_pixels, 2, padding, 1, "cpp")  # a contiguous grad_out
    assert_all_close(actual, expected)
    assert [cpp_ops.pixel_major(t) for t in actual] == [True, True, True]  # each as the tensor it belongs to
    x_sliced = torch.stack([x.detach(), x.detach()], dim=-1)[..., 0].requires_grad_()
    kernel_nc = kernel.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
    actual = outputs_and_grads(x_sliced, kernel_nc, 2, padding, 1, "cpp")
    assert_all_close(actual, expected)
    assert all(t.is_contiguous() for t in actual)


def test_both_gradient_kernels_get_grad_out_in_their_order(monkeypatch):
    """A grad_out in another layout (here NCHW) is copied once for the two backward kernels, not once by each; so is
    the kernel-map gradient that local_correlation's backward hands to two kernels."""
    orders = []  # per kernel call: whether all its tensors came in the kernels' order

    def recording(kernel):
        def call(*args):
            orders.append(all(cpp_ops.in_kernel_order(a) is a for a in args if isinstance(a, torch.Tensor)))
            return kernel(*args)

        return call

    for name in ("forward", "grad_input", "grad_kernel"):
        monkeypatch.setattr(cpp_ops, name, recording(getattr(cpp_ops, name)))
    x = torch.randn(2, 8, 9, 7).to(memory_format=torch.channels_last).requires_grad_()
    kernel = torch.randn(2, 2, 3, 3, 5, 4).permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2)
    out = involution2d(x, kernel.requires_grad_(), stride=2, backend="cpp")
    orders.clear()
    out.backward(torch.randn(out.shape))  # NCHW
    assert orders == [True, True]
    query = torch.randn(2, 8, 5, 4).to(memory_format=torch.channels_last).requires_grad_()
    correlation = local_correlation(query, x, 3, 2, stride=2, backend="cpp")
    orders.clear()
    correlation.backward(torch.randn(correlation.shape))  # contiguous (B, G, K, K, Ho, Wo)
    assert orders == [True, True]


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_fake_kernels_give_the_real_strides(channels_last):
    x, kernel, padding = random_problem(2, 8, 2, 7, 5, 3, 2, 1, dtype=torch.float32)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
        kernel = kernel.detach().permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2).requires_grad_()
    torch.library.opcheck(torch.ops.involution.aggregate.default, (x, kernel, 2, padding, 1, "cpp"))
    query = torch.randn(2, 8, 4, 3).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.library.opcheck(torch.ops.involution.correlate.default, (query, x, 3, 2, 2, padding, 1, "cpp"))


def test_local_correlation_and_its_gradients():
    query, key = torch.randn(2, 16, 5, 4, dtype=torch.float64), torch.randn(2, 16, 9, 7, dtype=torch.float64)
    query.requires_grad_(), key.requires_grad_()
    actual = local_correlation(query, key, 3, 2, stride=2, backend="cpp")
    expected = local_correlation_reference(query, key, 3, 2, 2, 1, 1)
    torch.testing.assert_close(actual, expected)
    assert torch.autograd.gradcheck(lambda q, k: local_correlation(q, k, 3, 2, stride=2, backend="cpp"), (query, key))


def test_module_in_a_compiled_channels_last_model_matches_the_reference():
    module = Involution2d(16, 5, stride=2, group_channels=8).to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 11, 9).to(memory_format=torch.channels_last).requires_grad_()
    compiled = torch.compile(module, fullgraph=True)
    try:
        actual = compiled(x)
    finally:
        # A later compile of Involution2d at another size would otherwise trace sizes as symbols (automatic
        # dynamic shapes), which inductor 2.14 fails on in CeilAvgPool2d's modulo, whatever the backend.
        torch._dynamo.reset()
    module.backend = "reference"
    expected = module(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    grads = [torch.autograd.grad(out.sum(), (x, module.conv2.conv.weight)) for out in (actual, expected)]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_auto_picks_the_compiled_kernels_on_the_cpu(monkeypatch):
    calls = []
    forward = cpp_ops.forward
    monkeypatch.setattr(cpp_ops, "forward", lambda *args: calls.append(args) or forward(*args))
    x, kernel, _ = random_problem(1, 4, 1, 5, 5, 3, 1, 1)
    involution2d(x, kernel)
    assert len(calls) == 1


def test_without_a_compiler_auto_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setenv("INVOLUTION_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_ops, "_loaded", None)  # as in a fresh process
    x, kernel, padding = random_problem(1, 4, 2, 6, 5, 3, 1, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = involution2d(x, kernel)
        involution2d(x, kernel)
    assert [str(w.message) for w in caught] == [
        "involution: compiled CPU kernels unavailable (Ninja is required to load C++ extensions); using the torch path"
    ]
    torch.testing.assert_close(out, involution2d(x, kernel, backend="torch"))
    with pytest.raises(ValueError, match="backend='cpp' needs CPU tensors and a C\\+\\+ compiler"):
        involution2d(x, kernel, backend="cpp")


def test_cpp_backend_needs_cpu_tensors():
    from involution.ops.op import _resolve_backend

    with pytest.raises(ValueError, match="backend='cpp' needs CPU tensors .*got a tensor on meta"):
        _resolve_backend("cpp", torch.randn(1, 4, 5, 5, device="meta"))
