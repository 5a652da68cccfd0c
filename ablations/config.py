"""Run configuration: a typed schema, YAML loading with key=value overrides, and validation before training.

Every key is declared below with its default and a comment; an unknown key, a value of the wrong type,
a model option the model does not take or a missing dataset path fails with a message naming it.
Imports neither torch nor the model zoo until a config is validated: analysis reads configs without them.
"""

import dataclasses
import functools
import hashlib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key or path."""


@dataclass
class ModelConfig:
    name: str = "rednet26"  # a registered model: involution.models.list_models()
    # Keyword arguments of build_model (kernel_size, group_channels, stem, width, ...). in_chans and
    # num_classes come from the dataset.
    options: dict = field(default_factory=dict)


@dataclass
class SyntheticConfig:
    train_size: int = 512
    val_size: int = 256
    num_classes: int = 4
    image_size: int = 16
    channels: int = 3


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"  # imagenet | fashion_mnist | synthetic
    root: Optional[str] = FASHION_MNIST_DIR  # imagenet: folder with train/ and val/
    # imagenet: set from the folder when the config is validated (class names and image counts); the run id
    # sees it instead of root, so two different folders never share ids and a moved one keeps them.
    fingerprint: Optional[str] = None
    # Train on N images only, the same number from every class, drawn with train.seed (quick runs).
    train_subset: Optional[int] = None
    image_size: int = 224  # imagenet crop size (fashion_mnist is 28x28, synthetic sets its own)
    augment: bool = True  # imagenet: random-resized crop + flip; fashion_mnist: flip + 2-pixel shifts
    num_workers: int = 0  # data-loading processes per training process
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    epochs: int = 5
    batch_size: int = 128  # per process; the global batch is batch_size * world size
    lr_per_256: float = 0.1  # SGD learning rate for a global batch of 256, scaled linearly
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0  # linear warm-up (may be fractional), then cosine to min_lr
    warmup_start_factor: float = 0.25  # warm-up starts at this fraction of the learning rate
    min_lr: float = 0.0
    # False: the cosine falls every step, from the end of the warm-up. True: mmcv's CosineAnnealing (the official
    # recipe): the rate is set at each epoch's start from epoch / epochs, and the warm-up scales it.
    cosine_by_epoch: bool = False
    label_smoothing: float = 0.1


@dataclass
class TrainConfig:
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | none | bf16 | fp16
    # The official initialisation of biases and classifier (build_model's official_init); False keeps PyTorch's.
    official_init: bool = False
    channels_last: bool = True
    deterministic: bool = True  # torch.use_deterministic_algorithms; exact resumes on CPU
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_type(path: str, value: Any, annotation) -> Any:
    """value converted to `annotation` (int -> float allowed), or ConfigError naming `path`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build the dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known under '{prefix or '.'}': {', '.join(fields)})")
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            values[name] = from_dict(hints[name], value, f"{prefix}{name}.")
        else:
            values[name] = _check_type(f"{prefix}{name}", value, hints[name])
    return cls(**values)


def set_key(data: dict, key: str, value: Any) -> None:
    """data[a][b][c] = value for key "a.b.c" (a mapping value replaces the whole section)."""
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: '{part}' is not a section")
    node[leaf] = value


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to a nested dict."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    set_key(data, key, yaml.safe_load(raw))


def load_config(path, overrides=()) -> RunConfig:
    """Read a YAML config, apply ``key=value`` overrides, and validate it (see validate)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    for assignment in overrides:
        apply_override(data, assignment)
    config = from_dict(RunConfig, data)
    validate(config)
    return config


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


DATASETS = ("imagenet", "fashion_mnist", "synthetic")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def validate(config: RunConfig) -> None:
    """Everything that can be checked before training: values, dataset paths, the model's options."""
    data, optim, train = config.data, config.optim, config.train
    if data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {data.dataset!r}, expected one of {DATASETS}")
    if data.dataset == "fashion_mnist":
        missing = [name for name in FASHION_MNIST_FILES if not (Path(data.root or "") / name).is_file()]
        if missing:
            raise ConfigError(
                f"data.root: {data.root} lacks {', '.join(missing)} (Debian: apt-get install dataset-fashion-mnist)"
            )
    if data.dataset == "imagenet":
        if not data.root:
            raise ConfigError("data.root: not set; pass data.root=/path/to/imagenet (a folder with train/ and val/)")
        for split in ("train", "val"):
            if not (Path(data.root or "") / split).is_dir():
                raise ConfigError(
                    f"data.root: {data.root} has no '{split}' folder (expected ImageNet as train/ and val/)"
                )
        found = folder_fingerprint(Path(data.root))
        if data.fingerprint not in (None, found):
            raise ConfigError(f"data.fingerprint: {data.root} is {found!r}, not {data.fingerprint!r}")
        data.fingerprint = found
    elif data.fingerprint is not None:
        raise ConfigError(f"data.fingerprint: only for image folders (data.dataset=imagenet), not {data.dataset}")
    for key, value, minimum in (
        ("optim.epochs", optim.epochs, 1),
        ("optim.batch_size", optim.batch_size, 1),
        ("data.num_workers", data.num_workers, 0),
        ("data.image_size", data.image_size, 1),
    ):
        if value < minimum:
            raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    if optim.warmup_epochs > optim.epochs:
        raise ConfigError(f"optim.warmup_epochs: {optim.warmup_epochs} exceeds optim.epochs={optim.epochs}")
    if train.amp not in ("auto", "none", "bf16", "fp16"):
        raise ConfigError(f"train.amp: expected auto, none, bf16 or fp16, got {train.amp!r}")
    for reserved in ("in_chans", "num_classes"):
        if reserved in config.model.options:
            raise ConfigError(f"model.options.{reserved}: set by the dataset, remove it from the config")
    if "official_init" in config.model.options:
        raise ConfigError("model.options.official_init: set by train.official_init, remove it from model.options")
    import torch  # here, not at the top: reading configs and records needs neither torch nor the models

    from involution.models import build_model

    try:  # builds the model without allocating: unknown options and bad values fail here
        with torch.device("meta"):
            build_model(config.model.name, **config.model.options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {config.model.name} with options {config.model.options}: {error}") from error


@functools.lru_cache(maxsize=None)  # once per folder and process: every cell of a grid validates its config
def folder_fingerprint(root: Path) -> str:
    """A cheap identity of an image-folder dataset: its class names and image counts (one directory listing
    per class, no image opened), e.g. "100 classes 3f9a0c21, 126689 train + 5000 val images"."""
    classes, counts = None, {}
    for split in ("train", "val"):
        folders = sorted((entry for entry in os.scandir(root / split) if entry.is_dir()), key=lambda e: e.name)
        names = [folder.name for folder in folders]
        if classes is not None and names != classes:
            raise ConfigError(f"data.root: {root}: train/ and val/ have different class folders")
        classes = names
        counts[split] = sum(
            entry.is_file() and not entry.name.startswith(".") for folder in folders for entry in os.scandir(folder)
        )
    digest = hashlib.sha1("\n".join(classes).encode()).hexdigest()[:8]
    return f"{len(classes)} classes {digest}, {counts['train']} train + {counts['val']} val images"
