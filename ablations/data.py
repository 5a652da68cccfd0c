"""Datasets: ImageNet from an image folder, Fashion-MNIST from Debian's package, and a synthetic set.

Nothing is downloaded: ImageNet is the user's folder, Fashion-MNIST the idx files of Debian's
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), the synthetic set is generated from a seed.
"""

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    channels: int
    image_size: int


class TensorImages(Dataset):
    """In-memory images (N, C, H, W) float, labels (N,), with optional flip + shift augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False, max_shift: int = 2):
        self.images, self.labels, self.augment, self.max_shift = images, labels, augment, max_shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.augment:
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
            dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
            image = torch.roll(image, (dy, dx), dims=(-2, -1))
        return image, self.labels[index]


class EpochSeeded(Dataset):
    """A training set whose samples draw their augmentation from (seed, epoch, index) alone, not from the
    global random state of whichever process loads them: the same images at any data.num_workers."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + index) % 2**63)
            return self.dataset[index]


def balanced_subset(labels, size: int, seed: int) -> list[int]:
    """Indices of `size` examples spread evenly over the classes, drawn with a seeded shuffle per class:
    a class-sorted folder still yields every class."""
    labels = torch.as_tensor(labels)
    if size >= len(labels):
        return list(range(len(labels)))
    generator = torch.Generator().manual_seed(seed)
    indices, turns = [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        indices.append(members[torch.randperm(len(members), generator=generator)])
        turns.append(torch.arange(len(members)))
    # Every class's first example, then every class's second, and so on.
    first = torch.argsort(torch.cat(turns), stable=True)[:size]
    return sorted(torch.cat(indices)[first].tolist())


def read_idx(path: Path) -> np.ndarray:
    """An idx(.gz) file of the MNIST family as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(config: DataConfig, seed: int = 0) -> Splits:
    root = Path(config.root)

    def split(prefix: str, augment: bool, subset=None) -> TensorImages:
        images = torch.from_numpy(read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy())
        labels = torch.from_numpy(read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
        if subset:
            keep = balanced_subset(labels, subset, seed)
            images, labels = images[keep], labels[keep]
        images = (images.unsqueeze(1).float() / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        return TensorImages(images, labels, augment)

    return Splits(split("train", config.augment, config.train_subset), split("t10k", False), 10, 1, 28)


def synthetic(config: DataConfig, seed: int = 0) -> Splits:
    """Noisy copies of one random template per class: learnable in a few steps, for tests."""
    s = config.synthetic
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(s.num_classes, s.channels, s.image_size, s.image_size, generator=generator)

    def split(size: int) -> TensorImages:
        labels = torch.randint(0, s.num_classes, (size,), generator=generator)
        noise = torch.randn(size, s.channels, s.image_size, s.image_size, generator=generator)
        return TensorImages(templates[labels] + 1.5 * noise, labels)

    train = split(s.train_size)
    if config.train_subset:
        keep = balanced_subset(train.labels, config.train_subset, seed)
        train = TensorImages(train.images[keep], train.labels[keep])
    return Splits(train, split(s.val_size), s.num_classes, s.channels, s.image_size)


def imagenet(config: DataConfig, seed: int = 0) -> Splits:
    """The paper's augmentation: random-resized crop + flip for training; resize to size*8/7, center crop."""
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    size = config.image_size
    train_transform = (
        transforms.Compose(
            [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        )
        if config.augment
        else transforms.Compose(
            [transforms.Resize(size * 8 // 7), transforms.CenterCrop(size), transforms.ToTensor(), normalize]
        )
    )
    val_transform = transforms.Compose(
        [transforms.Resize(size * 8 // 7), transforms.CenterCrop(size), transforms.ToTensor(), normalize]
    )
    train = datasets.ImageFolder(str(Path(config.root) / "train"), train_transform)
    val = datasets.ImageFolder(str(Path(config.root) / "val"), val_transform)
    if config.train_subset:
        train = Subset(train, balanced_subset(train.targets, config.train_subset, seed))
    return Splits(train, val, len(val.classes), 3, size)


def build_splits(config: DataConfig, seed: int = 0) -> Splits:
    """The dataset's splits; the training set's augmentation is seeded per sample (EpochSeeded)."""
    build = {"fashion_mnist": fashion_mnist, "synthetic": synthetic, "imagenet": imagenet}[config.dataset]
    splits = build(config, seed)
    splits.train = EpochSeeded(splits.train, seed)
    return splits
