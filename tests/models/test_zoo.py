"""Every registered model: builds, runs forward/backward, honours every knob, features for detection."""

import pytest
import torch
from torch import nn

from involution import Involution2d
from involution.models import BottleneckNet, build_model, list_models
from involution.models.attention import AttentionStem, LocalSelfAttention


def test_registry_lists_every_family_and_depth():
    for family in ("rednet", "resnet", "sasa"):
        assert list_models(f"{family}[0-9]*") == [f"{family}{d}" for d in (26, 38, 50, 101, 152)]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = build_model(name, num_classes=10, zero_init_residual=False)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def involutions(model):
    return [m for m in model.modules() if isinstance(m, Involution2d)]


def test_rednet_knobs_reach_every_bottleneck_involution():
    model = build_model(
        "rednet26",
        kernel_size=5,
        group_channels=8,
        reduction_ratio=2,
        dilation=2,
        kernel_generation="linear",
        backend="reference",
    )
    blocks = [m.conv2 for m in model.modules() if m.__class__.__name__ == "Bottleneck"]
    assert len(blocks) == 1 + 2 + 4 + 1
    for inv in blocks:
        assert (inv.kernel_size, inv.group_channels, inv.reduction_ratio, inv.dilation) == (5, 8, 2, 2)
        assert (inv.kernel_generation, inv.backend) == ("linear", "reference")
    assert [inv.stride for inv in blocks] == [1, 2, 1, 2, 1, 1, 1, 2]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("kernel_generation", ["bottleneck", "linear", "dot_product"])
def test_kernel_generation_variants_train(kernel_generation):
    model = build_model("rednet26", kernel_generation=kernel_generation, num_classes=5, width=16, stem="small")
    x = torch.randn(2, 3, 28, 28)
    model(x).sum().backward()
    assert all(inv.kernel_generation == kernel_generation for inv in involutions(model)[1:])


def test_stems():
    classification = build_model("rednet50")
    detection = build_model("rednet50", stem_kernel_size=7)
    assert classification.stem[1].conv2.conv.out_channels == 18  # K=3, G=2
    assert detection.stem[1].conv2.conv.out_channels == 98  # K=7, G=2
    resnet = build_model("resnet50")
    assert resnet.stem[0].conv.kernel_size == (7, 7)
    small = build_model("rednet26", stem="small", in_chans=1, width=16, num_classes=10)
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown stem 'deep'"):
        build_model("resnet26", stem="deep")


def test_out_indices_returns_stage_features():
    model = build_model("rednet50", out_indices=(0, 1, 2, 3), num_classes=0)
    features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [info["num_chs"] for info in model.feature_info] == [256, 512, 1024, 2048]
    assert [64 // f.shape[-1] for f in features] == [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]


def test_timm_style_interface():
    model = build_model("resnet26", num_classes=0)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, model.num_features)
    assert not [k for k in model.state_dict() if k.startswith("head.fc")]
    model.reset_classifier(7)
    assert model.forward_head(model.forward_features(torch.randn(2, 3, 64, 64))).shape == (2, 7)


def test_sasa_uses_local_self_attention():
    model = build_model("sasa26", heads=4, kernel_size=5)
    layers = [m for m in model.modules() if isinstance(m, LocalSelfAttention)]
    assert len(layers) == 8 and all((m.heads, m.kernel_size) == (4, 5) for m in layers)


def test_overrides_win_and_bad_names_fail():
    assert isinstance(build_model("rednet26", width=32), BottleneckNet)
    assert build_model("rednet26", width=32).num_features == 32 * 8 * 4
    with pytest.raises(ValueError, match="unknown model 'rednet27'; registered: rednet26, rednet38"):
        build_model("rednet27")
    with pytest.raises(ValueError, match=r"out_indices must be stage numbers 0..3, got \(4,\)"):
        build_model("rednet26", out_indices=(4,))


@pytest.mark.parametrize("size", [(65, 47), (31, 31)])
def test_full_attention_sasa_has_no_spatial_convolution_and_trains_on_odd_sizes(size):
    model = build_model("sasa26", stem="attention", num_classes=10, width=16, zero_init_residual=False)
    assert isinstance(model.stem[0], AttentionStem)
    spatial = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert not spatial, f"spatial convolutions: {spatial}"
    logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    reduced = model.maxpool(model.stem(torch.randn(2, 3, *size)))
    assert reduced.shape[-2:] == tuple(-(-side // 4) for side in size)  # as the convolution stem: ceil(side / 4)


def test_sasafull_is_sasa_with_the_attention_stem():
    named, built = build_model("sasafull50"), build_model("sasa50", stem="attention")
    assert {k: v.shape for k, v in named.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    assert list_models("sasafull*") == ["sasafull26", "sasafull38", "sasafull50"]
