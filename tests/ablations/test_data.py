"""Training subsets are seeded and class-balanced, also from a class-sorted ImageNet-style folder."""

import collections

import torch
from PIL import Image

from ablations.config import DataConfig
from ablations.data import balanced_subset, build_splits


def test_balanced_subset_of_class_sorted_labels():
    labels = torch.arange(10).repeat_interleave(50)  # sorted by class, as an image folder is
    subset = balanced_subset(labels, 95, seed=0)
    counts = collections.Counter(labels[subset].tolist())
    assert len(subset) == len(set(subset)) == 95
    assert sorted(counts) == list(range(10)) and set(counts.values()) == {9, 10}
    assert balanced_subset(labels, 95, seed=0) == subset
    assert balanced_subset(labels, 95, seed=1) != subset
    assert balanced_subset(labels, 1000, seed=0) == list(range(500))


def test_imagenet_subset_covers_every_class(tmp_path):
    for split in ("train", "val"):
        for label in range(4):
            folder = tmp_path / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for index in range(6):
                Image.new("RGB", (8, 8), (label * 60, index * 40, 0)).save(folder / f"{index}.png")
    config = DataConfig(dataset="imagenet", root=str(tmp_path), train_subset=8, image_size=8, augment=False)
    splits = build_splits(config, seed=0)
    labels = [splits.train[i][1] for i in range(len(splits.train))]
    assert collections.Counter(labels) == {0: 2, 1: 2, 2: 2, 3: 2}
