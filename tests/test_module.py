import pytest
import torch
import torch.nn.functional as F

from involution import Involution2d
from involution.complexity import flop_count_analysis


def official_involution(module: Involution2d, x: torch.Tensor) -> torch.Tensor:
    """The official operator's formulation: floor-mode average pool, unfold, weighted sum over the window."""
    k, g = module.kernel_size, module.groups
    pooled = F.avg_pool2d(x, module.stride) if module.stride > 1 else x
    weight = module.conv2.conv(F.relu(module.conv1.bn(module.conv1.conv(pooled))))
    b, _, h, w = weight.shape
    weight = weight.view(b, g, k * k, h, w).unsqueeze(2)
    padding = module.dilation * (k - 1) // 2
    columns = F.unfold(x, k, module.dilation, padding, module.stride).view(b, g, x.shape[1] // g, k * k, h, w)
    return (weight * columns).sum(dim=3).view(b, x.shape[1], h, w)


def trained_like(module: Involution2d) -> Involution2d:
    """Non-trivial BN statistics, in eval mode, so the comparison exercises every parameter."""
    bn = module.conv1.bn
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


def test_constructor_arguments_are_attributes():
    m = Involution2d(64, kernel_size=5, stride=2, group_channels=8, reduction_ratio=2, dilation=2, backend="torch")
    assert (m.channels, m.kernel_size, m.stride, m.group_channels, m.groups) == (64, 5, 2, 8, 8)
    assert (m.reduction_ratio, m.dilation, m.backend) == (2, 2, "torch")


def test_former_backend_name_is_replaced_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="Involution2d: backend='cpu' is deprecated, use backend='torch'"):
        assert Involution2d(32, backend="cpu").backend == "torch"


def test_parameter_names_follow_the_official_checkpoints():
    shapes = {name: tuple(t.shape) for name, t in Involution2d(64).state_dict().items()}
    assert shapes["conv1.conv.weight"] == (16, 64, 1, 1)
    assert shapes["conv1.bn.running_var"] == (16,)
    assert shapes["conv2.conv.weight"] == (49 * 4, 16, 1, 1)
    assert shapes["conv2.conv.bias"] == (49 * 4,)
    assert "conv1.conv.bias" not in shapes


@pytest.mark.parametrize("stride,dilation,size", [(1, 1, 8), (2, 1, 8), (2, 1, 14), (1, 2, 10), (2, 2, 12)])
def test_equals_the_official_operator_on_even_sizes(stride, dilation, size):
    m = trained_like(Involution2d(32, kernel_size=7, stride=stride, dilation=dilation))
    x = torch.randn(2, 32, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), official_involution(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("height,width", [(7, 7), (9, 14), (1, 3)])
def test_stride_two_on_odd_sizes_gives_the_output_size(height, width):
    m = Involution2d(16, kernel_size=3, stride=2, group_channels=4)
    out = m(torch.randn(2, 16, height, width))
    assert out.shape == (2, 16, (height + 1) // 2, (width + 1) // 2)


def test_backends_agree_through_the_module():
    m = trained_like(Involution2d(32, kernel_size=5, stride=2, group_channels=8))
    x = torch.randn(2, 32, 11, 9).to(memory_format=torch.channels_last)
    outputs = []
    for backend in ("reference", "torch"):
        m.backend = backend
        x_grad = x.clone().requires_grad_()
        out = m(x_grad)
        out.square().sum().backward()
        outputs.append((out, x_grad.grad, m.conv2.conv.weight.grad.clone()))
        m.zero_grad()
    for reference, fast in zip(*outputs):
        torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"channels": 24, "group_channels": 16}, "channels=24 is not divisible by group_channels=16"),
        ({"channels": 32, "kernel_size": 4}, "kernel_size must be odd and positive, got 4"),
        ({"channels": 4, "group_channels": 4, "reduction_ratio": 8}, "reduction_ratio=8 leaves no channels out of 4"),
        ({"channels": 32, "backend": "cupy"}, "unknown backend 'cupy'"),
        ({"channels": 32, "kernel_generation": "mlp"}, "unknown kernel_generation 'mlp'"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Involution2d(**kwargs)


def test_fvcore_counts_the_aggregation():
    m = Involution2d(32, kernel_size=7, stride=2, group_channels=16, fused=False).eval()
    flops = flop_count_analysis(m, torch.randn(2, 32, 9, 9)).by_operator()
    assert flops["aggregate"] == 2 * 49 * 32 * 5 * 5
    # The kernel generation's 1x1 convolutions on the 5x5 pooled map, for comparison.
    assert flops["conv"] == 2 * 5 * 5 * (32 * 8 + 8 * 98)


def test_torch_compile_fullgraph_of_the_module():
    module = Involution2d(16, kernel_size=3, stride=2, group_channels=4)
    x = torch.randn(2, 16, 9, 9, requires_grad=True)
    expected = module(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    compiled = torch.compile(module, fullgraph=True)
    actual = compiled(x)
    (actual_grad,) = torch.autograd.grad(actual.sum(), x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual_grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kernel_generation,parts",
    [
        ("linear", {"conv2.conv.weight", "conv2.conv.bias"}),
        ("dot_product", {"query.weight", "key.weight"}),
    ],
)
def test_kernel_generation_variants_parts(kernel_generation, parts):
    module = Involution2d(32, kernel_size=5, stride=2, group_channels=8, kernel_generation=kernel_generation)
    assert set(module.state_dict()) == parts
    assert module(torch.randn(2, 32, 9, 7)).shape == (2, 32, 5, 4)


@pytest.mark.parametrize("stride,height,width", [(2, 7, 9), (2, 8, 5), (3, 10, 11), (2, 6, 8)])
def test_ceil_average_pool_equals_ceil_mode_pooling(stride, height, width):
    from involution.module import CeilAvgPool2d

    x = torch.randn(2, 3, height, width, dtype=torch.float64, requires_grad=True)
    expected = F.avg_pool2d(x, stride, ceil_mode=True)
    actual = CeilAvgPool2d(stride)(x)
    torch.testing.assert_close(actual, expected)
    grad = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(actual, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
