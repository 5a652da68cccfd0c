"""Shared fixtures: a small generated COCO-format set (the fashion_coco recipe, fewer images) registered as
"tiny_coco"."""

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

from detectron2_ext import datasets  # noqa: E402

TINY_SPLITS = {"train": ("train", 8, 0), "val": ("t10k", 4, 1)}


@pytest.fixture
def tiny_splits():
    return TINY_SPLITS


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """The root of an 8 + 4 image set, registered as tiny_coco_{train,val} and tiny_coco_sem_seg_{train,val}."""
    patch = pytest.MonkeyPatch()
    patch.setattr(datasets, "GENERATED_SPLITS", TINY_SPLITS)
    try:
        root = datasets.generate(tmp_path_factory.mktemp("datasets") / "tiny_coco")
    finally:
        patch.undo()
    datasets.register_coco_folder(root)
    return root
