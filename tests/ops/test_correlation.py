"""local_correlation (query-key dot products over K x K windows) against its unfold reference."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from involution.ops import local_correlation, local_correlation_reference

BACKENDS = ["torch"] + (["triton"] if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1" else [])
# Triton runs on CUDA tensors where there is a GPU, in its interpreter on CPU tensors elsewhere.
DEVICES = {"torch": "cpu", "triton": "cuda" if torch.cuda.is_available() else "cpu"}


def random_problem(b, c, g, h, w, k, stride, dilation, dtype=torch.float64, device="cpu"):
    padding = dilation * (k - 1) // 2
    out_h = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    query = torch.randn(b, c, out_h, out_w, dtype=dtype, device=device, requires_grad=True)
    key = torch.randn(b, c, h, w, dtype=dtype, device=device, requires_grad=True)
    return query, key, padding


def results(fn, query, key):
    out = fn(query, key)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
    return (out, *torch.autograd.grad(out, (query, key), grad_out))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.integers(1, 3),
    h=st.integers(5, 11),
    w=st.integers(5, 11),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    b=st.integers(1, 2),
)
def test_matches_reference_with_gradients(backend, groups, group_channels, h, w, k, stride, dilation, b):
    query, key, padding = random_problem(
        b, groups * group_channels, groups, h, w, k, stride, dilation, device=DEVICES[backend]
    )
    expected = results(
        lambda q, kk: local_correlation_reference(q, kk, k, groups, stride, padding, dilation), query, key
    )
    actual = results(
        lambda q, kk: local_correlation(q, kk, k, groups, stride, dilation=dilation, backend=backend), query, key
    )
    for name, a, e in zip(("output", "grad query", "grad key"), actual, expected):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def test_gradcheck_torch_backend():
    query, key, _ = random_problem(2, 4, 2, 6, 7, 3, 2, 1)
    assert torch.autograd.gradcheck(lambda q, k: local_correlation(q, k, 3, 2, stride=2, backend="torch"), (query, key))


def test_opcheck():
    query, key, padding = random_problem(2, 4, 2, 7, 5, 3, 2, 1, dtype=torch.float32)
    torch.library.opcheck(torch.ops.involution.correlate.default, (query, key, 3, 2, 2, padding, 1, "torch"))


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), 3, 3),
            r"channels C=4 are not divisible by the kernel's groups G=3",
        ),
        ((torch.randn(1, 4, 4, 4), torch.randn(1, 4, 5, 5), 3, 2), r"query is 4x4 but the output is 5x5"),
        ((torch.randn(1, 4, 5, 5), torch.randn(1, 2, 5, 5), 3, 2), r"differ in batch or channels"),
        ((torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), 3, 0), r"groups must be a positive int, got 0"),
        ((torch.randn(4, 5, 5), torch.randn(1, 4, 5, 5), 3, 2), r"query must be 4-D \(B, C, Ho, Wo\)"),
    ],
)
def test_bad_input_names_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        local_correlation(*args)
