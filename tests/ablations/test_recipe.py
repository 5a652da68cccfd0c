"""The ImageNet recipe is the official mmcls one (d-li14/involution cls/configs): cosine set per epoch with the
warm-up on top, fp32, classifier N(0, 0.01) and convolution biases 0; the other configs keep their behaviour."""

import math
from pathlib import Path

import pytest
import torch

from ablations import train
from ablations.config import ConfigError, OptimConfig, load_config
from involution.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "ablations" / "configs"


def official_rate(optim: OptimConfig, steps_per_epoch: int, step: int) -> float:
    """mmcv's CosineAnnealingLrUpdaterHook (by_epoch, min_lr 0) with a linear warm-up of warmup iterations."""
    regular = 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / optim.epochs))
    warmup = optim.warmup_epochs * steps_per_epoch
    if step < warmup:
        return regular * (1 - (1 - step / warmup) * (1 - optim.warmup_start_factor))
    return regular


def test_cosine_by_epoch_is_mmcvs_cosine_annealing():
    optim = OptimConfig(epochs=13, warmup_epochs=2, warmup_start_factor=0.25, cosine_by_epoch=True)
    factor = train.warmup_cosine(optim, steps_per_epoch=10)
    for step in range(130):
        assert factor(step) == pytest.approx(official_rate(optim, 10, step), abs=1e-12)
    assert factor(25) == factor(29) < factor(19)  # constant within an epoch after the warm-up


def test_cosine_by_step_is_unchanged_by_default():
    optim = OptimConfig(epochs=13, warmup_epochs=2, warmup_start_factor=0.25)
    factor = train.warmup_cosine(optim, steps_per_epoch=10)
    assert factor(0) == 0.25 and factor(20) == 1.0
    assert factor(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 110)))


@torch.no_grad()
def test_official_init_zeroes_biases_and_draws_the_classifier_from_n0_001():
    torch.manual_seed(0)
    model = build_model("rednet26", official_init=True)
    assert model.head.fc.bias.abs().max() == 0
    assert model.head.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(bias.abs().max() == 0 for bias in biases)  # the kernel generations' 1x1 convolutions


@torch.no_grad()
def test_default_init_is_pytorchs_for_biases_and_classifier():
    torch.manual_seed(0)
    model = build_model("rednet26")
    assert model.head.fc.bias.abs().max() > 0 and model.head.fc.weight.std().item() > 0.012
    assert model.layer1[0].conv2.conv2.conv.bias.abs().max() > 0


def test_imagenet_configs_hold_the_official_recipe(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    for name in ("imagenet.yaml", "imagenet_stem7.yaml"):
        config = load_config(CONFIGS / name, [f"data.root={tmp_path}"])
        assert config.optim.cosine_by_epoch and config.train.official_init and config.train.amp == "none"
    for name in ("fashion_mnist.yaml", "synthetic.yaml"):
        config = load_config(CONFIGS / name)
        assert not config.optim.cosine_by_epoch and not config.train.official_init and config.train.amp == "auto"


def test_the_trainer_builds_the_model_with_the_official_init(tmp_path):
    config = load_config(CONFIGS / "synthetic.yaml", ["train.official_init=true"])
    trainer = train.Trainer(config, tmp_path, train.setup_process(), progress=False)
    trainer.build()
    assert trainer.model.head.fc.bias.abs().max() == 0


def test_official_init_is_not_a_model_option():
    with pytest.raises(ConfigError, match="train.official_init"):
        load_config(CONFIGS / "synthetic.yaml", ["model.options.official_init=true"])
