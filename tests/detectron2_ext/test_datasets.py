"""The generated set (deterministic, exact boxes/masks/labels) and COCO-folder registration."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import numpy as np  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from detectron2_ext import datasets  # noqa: E402


def test_generation_is_deterministic(tiny_coco, tiny_splits, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "GENERATED_SPLITS", tiny_splits)
    again = datasets.generate(tmp_path / "again")
    for path in sorted(tiny_coco.rglob("*.*")):
        assert path.read_bytes() == (again / path.relative_to(tiny_coco)).read_bytes(), path


def test_boxes_masks_and_labels_agree(tiny_coco):
    content = json.loads((tiny_coco / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in content["categories"]] == list(datasets.FASHION_CLASSES)
    assert len(content["annotations"]) >= len(content["images"])
    for image in content["images"]:
        labels = np.asarray(Image.open(tiny_coco / "sem_seg_train" / image["file_name"]))
        covered = np.zeros_like(labels, bool)
        for annotation in (a for a in content["annotations"] if a["image_id"] == image["id"]):
            rles = mask_utils.frPyObjects(annotation["segmentation"], image["height"], image["width"])
            mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            rows, cols = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())
            assert annotation["area"] == mask.sum()
            assert (labels[mask] == annotation["category_id"]).all()
            covered |= mask
        assert (labels[~covered] == datasets.BACKGROUND).all()


def test_registered_by_name(tiny_coco):
    train = DatasetCatalog.get("tiny_coco_train")
    assert len(train) == 8 and all(record["annotations"] for record in train)
    assert MetadataCatalog.get("tiny_coco_train").thing_classes == list(datasets.FASHION_CLASSES)
    semantic = DatasetCatalog.get("tiny_coco_sem_seg_val")
    assert len(semantic) == 4 and MetadataCatalog.get("tiny_coco_sem_seg_val").stuff_classes[0] == "background"


def test_a_user_folder_registers_the_same_way(tiny_coco, tmp_path):
    folder = shutil.copytree(tiny_coco, tmp_path / "my_shop")
    assert "my_shop_val" in datasets.register_coco_folder(folder)
    assert len(DatasetCatalog.get("my_shop_val")) == 4


def test_missing_annotation_file(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotations/instances_<split>.json"):
        datasets.register_coco_folder(tmp_path)


@pytest.mark.parametrize("content", ["{not json", '{"images": [], "categories": []}', "[1, 2]"])
def test_malformed_annotation_file(tmp_path, content):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(content)
    with pytest.raises(ValueError, match="instances_train.json: not a COCO-format instances annotation file"):
        datasets.register_coco_folder(tmp_path)


def test_images_are_the_annotation_files_not_whatever_the_folder_holds(tiny_coco, tmp_path):
    folder = shutil.copytree(tiny_coco, tmp_path / "shop")
    for extra in ("val/.DS_Store", "val/README", "sem_seg_val/.DS_Store"):
        (folder / extra).write_text("not an image")
    records = DatasetCatalog.get(datasets.register_coco_folder(folder)[-1])
    assert [Path(r["file_name"]).name for r in records] == [f"{i:06d}.png" for i in range(1, 5)]
    assert all(Path(r["sem_seg_file_name"]).is_file() and r["height"] == datasets.IMAGE_SIZE for r in records)


def test_a_missing_label_map_is_named(tiny_coco, tmp_path):
    folder = shutil.copytree(tiny_coco, tmp_path / "shop")
    (folder / "sem_seg_val" / "000003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sem_seg_val/000003.png: the label map of 000003.png .* is missing"):
        DatasetCatalog.get(datasets.register_coco_folder(folder)[-1])
