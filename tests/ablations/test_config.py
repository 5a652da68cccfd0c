"""A broken config fails before training, with a message naming the key or path."""

from pathlib import Path

import pytest

from ablations import train
from ablations.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "ablations" / "configs"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lrr=0.1"], r"unknown key 'optim.lrr' \(known under 'optim.': epochs, batch_size"),
        (["trian.seed=1"], r"unknown key 'trian'"),
        (["optim.epochs=three"], r"optim.epochs: expected int, got str 'three'"),
        (["optim.nesterov=1"], r"optim.nesterov: expected bool, got int 1"),
        (["model.options.kernel_size=4"], r"model: rednet26 with options .*kernel_size must be odd"),
        (["model.options.kernal_size=3"], r"model: rednet26 .*unexpected keyword argument 'kernal_size'"),
        (["model.name=rednet27"], r"unknown model 'rednet27'"),
        (["model.options.num_classes=5"], r"model.options.num_classes: set by the dataset"),
        (
            ["data.dataset=fashion_mnist", "data.root=/nonexistent"],
            r"data.root: /nonexistent lacks train-images-idx3-ubyte.gz",
        ),
        (["data.dataset=imagenet"], r"data.root: not set; pass data.root=/path/to/imagenet"),
        (["data.dataset=cifar"], r"data.dataset: unknown dataset 'cifar'"),
        (["optim.warmup_epochs=9"], r"optim.warmup_epochs: 9.0 exceeds optim.epochs=2"),
        (["train.amp=fp8"], r"train.amp: expected auto, none, bf16 or fp16, got 'fp8'"),
        (["optim"], r"override 'optim': expected key=value"),
    ],
)
def test_broken_config_names_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "synthetic.yaml", overrides)


def test_imagenet_folder_layout_is_checked(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ConfigError, match=f"data.root: {tmp_path} has no 'val' folder"):
        load_config(CONFIGS / "imagenet.yaml", [f"data.root={tmp_path}"])
    (tmp_path / "val").mkdir()
    assert load_config(CONFIGS / "imagenet.yaml", [f"data.root={tmp_path}"]).optim.epochs == 130


def test_cli_fails_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="optim.batch_size: expected int"):
        train.main([str(CONFIGS / "synthetic.yaml"), "--out", str(tmp_path), "optim.batch_size=1.5"])
    assert not any(tmp_path.iterdir())


def test_overrides_and_yaml_values():
    config = load_config(
        CONFIGS / "synthetic.yaml", ["optim.weight_decay=1e-4", "model.options.width=16", "data.train_subset=100"]
    )
    assert config.optim.weight_decay == 1e-4 and config.model.options["width"] == 16
    assert config.data.train_subset == 100
