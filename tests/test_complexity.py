"""Params and FLOPs under the paper's convention, against the published tables and hand counts."""

import pytest
import torch
from torch import nn

from involution import Involution2d
from involution.complexity import count_flops, count_params, flop_count_analysis, main
from involution.models import build_model

# Official RedNets [R]: params exact to 0.01 M; FLOPs within 1.5% (an independent re-count under the same
# convention gives 1.71/2.20/2.69/4.72/6.76, a constant ~0.02 G below the official figures).
REDNETS = {26: (9.23, 1.73), 38: (12.39, 2.22), 50: (15.54, 2.71), 101: (25.65, 4.74), 152: (33.99, 6.79)}
# ResNet baselines: params read off the README's figure (±0.15 M); FLOPs re-counted under the convention.
RESNETS = {26: (13.7, 2.36), 38: (19.6, 3.24), 50: (25.6, 4.12), 101: (44.6, 7.85), 152: (60.2, 11.58)}


@pytest.mark.parametrize("depth", REDNETS)
def test_rednet_params_and_flops_match_the_official_numbers(depth):
    params_m, flops_g = REDNETS[depth]
    model = build_model(f"rednet{depth}")
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=0.01)
    assert count_flops(model) / 1e9 == pytest.approx(flops_g, rel=0.015)


@pytest.mark.parametrize("depth", RESNETS)
def test_resnet_params_and_flops(depth):
    params_m, flops_g = RESNETS[depth]
    model = build_model(f"resnet{depth}")
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=0.15)
    assert count_flops(model) / 1e9 == pytest.approx(flops_g, rel=0.015)


def test_count_flops_by_hand_on_a_user_model():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        Involution2d(8, kernel_size=3, group_channels=4, reduction_ratio=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    conv = 8 * 8 * 8 * (3 * 9 + 1)  # 8x8 output, 8 channels, 27 MACs + bias each
    bn_relu = 2 * 8 * 64 + 8 * 64
    pool = 8 * 64
    # On the 4x4 map: conv1 (8 -> 4), its BN and ReLU, conv2 (4 -> 9 weights x 2 groups, bias), aggregation.
    involution = 16 * 4 * 8 + 2 * 4 * 16 + 4 * 16 + 16 * 18 * (4 + 1) + 9 * 8 * 16
    head = 8 * 16 + 5 * (8 + 1)
    assert count_flops(model, (3, 16, 16)) == conv + bn_relu + pool + involution + head


def test_fvcore_counts_correlation_and_aggregation():
    layer = Involution2d(16, kernel_size=3, group_channels=4, reduction_ratio=2, kernel_generation="dot_product").eval()
    counts = flop_count_analysis(layer, torch.randn(1, 16, 6, 6)).by_operator()
    assert counts["correlate"] == 9 * 8 * 36
    assert counts["aggregate"] == 9 * 16 * 36


def test_cli_prints_every_model_with_the_published_numbers(capsys):
    main(["--models", "rednet26", "--size", "224"])
    out = capsys.readouterr().out
    assert "rednet26" in out and "9.233" in out and "9.23 M 1.73 G" in out
