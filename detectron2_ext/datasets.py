"""Datasets by name: a generated COCO-format instance- and semantic-segmentation set of real objects, and any
COCO-format folder.

The generated set ("fashion_coco") places Fashion-MNIST items (Debian's dataset-fashion-mnist: training items in
"train", test items in "val") on textured canvases at several scales. Each item is tinted, shaded by its own
pixels and blended in by an opacity that follows them; its polygons trace the pixels at least half opaque, and
the instance mask, box and area are those of the rasterized polygons (holes filled, as COCO polygons have none),
so boxes, masks and the semantic label map agree exactly. Items never overlap.
Generation is deterministic (seeded per split) and takes seconds.

A COCO-format folder is laid out as COCO is: ``DIR/annotations/instances_<split>.json`` with the images it lists
in ``DIR/<split>/``; it registers as ``<name>_<split>`` (and ``<name>_sem_seg_<split>`` where
``DIR/sem_seg_<split>/`` holds PNG label maps named like the images). Other files in the folders are ignored.
"""

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Optional, Union

import contourpy
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from PIL import Image
from pycocotools import mask as mask_utils

from ablations.config import FASHION_MNIST_DIR, FASHION_MNIST_FILES, ConfigError
from ablations.data import read_idx

FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"
)  # fmt: skip
GENERATED_NAME = "fashion_coco"
# split: (Fashion-MNIST file prefix, images, seed)
GENERATED_SPLITS = {"train": ("train", 400, 0), "val": ("t10k", 80, 1)}
IMAGE_SIZE = 128
ITEMS_PER_IMAGE = (1, 3)
ITEM_SCALES = (1.0, 2.5)  # the 28x28 items become 28-70 pixels wide
BACKGROUND = 0  # semantic label of the canvas; item class k has label k + 1
IGNORE_LABEL = 255
OPAQUE_FROM = 0.15  # item pixels at least this bright (of 1) cover the canvas; fainter ones blend into it
VERSION = 2  # bump when the generation changes: existing copies are then regenerated


def generated_root() -> Path:
    """Where the generated set lives: $DETECTRON2_DATASETS/fashion_coco (Detectron2's dataset root, default
    ./datasets)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")) / GENERATED_NAME


def textured_canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float canvas: a few coloured sinusoidal gratings at random orientations and frequencies,
    plus pixel noise."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    canvas = np.zeros((size, size, 3), np.float32) + rng.uniform(60, 190, 3)
    for _ in range(3):
        angle, frequency, phase = rng.uniform(0, np.pi), rng.uniform(0.03, 0.4), rng.uniform(0, 2 * np.pi)
        grating = np.sin(frequency * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)
        canvas += grating[..., None] * rng.uniform(-30, 30, 3)
    return canvas + rng.normal(0, 8, canvas.shape)


def item_polygons(alpha: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    """COCO polygons (x, y in pixel-edge coordinates) around the pixels of ``alpha`` above 0.5, offset to
    (x0, y0): the 0.5 iso-lines of the zero-padded map, which run along the pixels' edges."""
    padded = np.pad(alpha, 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    offset = np.array([x0 - 0.5, y0 - 0.5])  # padding shifts by one pixel; centres are at +0.5
    return [(line + offset).ravel().tolist() for line in lines if len(line) >= 4]


def place(rng: np.random.Generator, size: int, taken: list, extent: int) -> Optional[tuple[int, int]]:
    """A top-left corner for an extent x extent item that keeps 2 pixels away from the items already placed."""
    for _ in range(20):
        x0, y0 = (int(v) for v in rng.integers(0, size - extent + 1, 2))
        if all(x0 + extent + 2 <= a or a + e + 2 <= x0 or y0 + extent + 2 <= b or b + e + 2 <= y0 for a, b, e in taken):
            return x0, y0
    return None


def generate_split(root: Path, split: str, source: str, count: int, seed: int) -> None:
    items = read_idx(Path(FASHION_MNIST_DIR) / f"{source}-images-idx3-ubyte.gz")
    labels = read_idx(Path(FASHION_MNIST_DIR) / f"{source}-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True)
    (root / f"sem_seg_{split}").mkdir()
    images, annotations = [], []
    for image_id in range(1, count + 1):
        canvas = textured_canvas(rng, IMAGE_SIZE)
        semantic = np.full((IMAGE_SIZE, IMAGE_SIZE), BACKGROUND, np.uint8)
        taken = []
        for _ in range(rng.integers(ITEMS_PER_IMAGE[0], ITEMS_PER_IMAGE[1] + 1)):
            index = int(rng.integers(len(items)))
            extent = round(28 * rng.uniform(*ITEM_SCALES))
            corner = place(rng, IMAGE_SIZE, taken, extent)
            if corner is None:
                continue
            x0, y0 = corner
            shade = np.asarray(Image.fromarray(items[index]).resize((extent, extent), Image.BILINEAR)) / 255.0
            alpha = np.clip(shade / OPAQUE_FROM, 0, 1)
            polygons = item_polygons(alpha, x0, y0)
            if not polygons:
                continue
            mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, IMAGE_SIZE, IMAGE_SIZE)))
            rows, cols = np.nonzero(mask)
            if len(rows) < 30:
                continue
            taken.append((x0, y0, extent))
            color = rng.uniform(0, 255, 3)
            window = canvas[y0 : y0 + extent, x0 : x0 + extent]
            window[:] = window * (1 - alpha[..., None]) + color * (0.4 + 0.6 * shade[..., None]) * alpha[..., None]
            semantic[mask > 0] = int(labels[index]) + 1
            x, y = int(cols.min()), int(rows.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(labels[index]) + 1,
                    "bbox": [x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y],
                    "area": int(len(rows)),
                    "segmentation": polygons,
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:06d}.png"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(root / split / file_name)
        Image.fromarray(semantic).save(root / f"sem_seg_{split}" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": IMAGE_SIZE, "width": IMAGE_SIZE})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(FASHION_CLASSES)]
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"instances_{split}.json", "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)


def generate(root: Union[str, Path]) -> Path:
    """Write the generated set under ``root`` (unless an identical one is there) and return ``root``. Written to
    a temporary folder first and moved in place, so concurrent or interrupted runs never see half a set."""
    root = Path(root)
    stamp = json.dumps({"version": VERSION, "splits": GENERATED_SPLITS, "size": IMAGE_SIZE})
    if (root / "GENERATED").is_file() and (root / "GENERATED").read_text() == stamp:
        return root
    if not all((Path(FASHION_MNIST_DIR) / name).is_file() for name in FASHION_MNIST_FILES):
        raise FileNotFoundError(
            f"{FASHION_MNIST_DIR}: Fashion-MNIST is missing; install it with: apt-get install dataset-fashion-mnist"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    for split, (source, count, seed) in GENERATED_SPLITS.items():
        generate_split(staging, split, source, count, seed)
    (staging / "GENERATED").write_text(stamp)
    if root.exists():
        shutil.rmtree(root)
    os.replace(staging, root)
    return root


def load_checked_coco_json(json_file: Path, image_root: Path, dataset_name: str) -> list[dict]:
    """Detectron2's COCO loader, with a malformed file named as such."""
    try:
        return load_coco_json(str(json_file), str(image_root), dataset_name)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError) as error:
        raise malformed(json_file, error) from error


def load_sem_seg_labels(json_file: Path, image_root: Path, label_root: Path) -> list[dict]:
    """The semantic-segmentation records of a split: its images as the annotation file lists them (not whatever
    else the folder holds), each with the PNG label map of the same name."""
    records = []
    for image in _read_instances(json_file)["images"]:
        label_file = label_root / Path(image["file_name"]).with_suffix(".png")
        if not label_file.is_file():
            raise FileNotFoundError(f"{label_file}: the label map of {image['file_name']} ({json_file}) is missing")
        records.append(
            {
                "file_name": str(image_root / image["file_name"]),
                "sem_seg_file_name": str(label_file),
                "height": image["height"],
                "width": image["width"],
            }
        )
    return records


def register_coco_folders(folders: list[Union[str, Path]]) -> list[str]:
    """Register several COCO-format folders, refusing two that would register under one name."""
    by_name = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in by_name:
            raise ConfigError(
                f"--dataset-dir: {by_name[name]} and {folder} both register as {name}_<split>; rename one folder"
            )
        by_name[name] = folder
    return [dataset for folder in folders for dataset in register_coco_folder(folder)]


def register_coco_folder(root: Union[str, Path], name: Optional[str] = None) -> list[str]:
    """Register every split of a COCO-format folder (see the module docstring) as ``<name>_<split>`` (and
    ``<name>_sem_seg_<split>``); ``name`` defaults to the folder's name. Returns the registered names."""
    root = Path(root)
    name = name or root.resolve().name
    annotation_files = sorted((root / "annotations").glob("instances_*.json"))
    if not annotation_files:
        raise FileNotFoundError(
            f"{root}: no COCO annotation file; expected {root}/annotations/instances_<split>.json with the "
            f"split's images in {root}/<split>/"
        )
    registered = []
    for json_file in annotation_files:
        split = json_file.stem.removeprefix("instances_")
        categories = sorted(_read_instances(json_file)["categories"], key=lambda category: category["id"])
        classes = [category["name"] for category in categories]
        image_root = root / split
        if not image_root.is_dir():
            raise FileNotFoundError(f"{json_file}: its images should be in {image_root}, which does not exist")
        dataset = _register(
            f"{name}_{split}", partial(load_checked_coco_json, json_file, image_root, f"{name}_{split}")
        )
        MetadataCatalog.get(dataset).set(
            json_file=str(json_file), image_root=str(image_root), evaluator_type="coco", thing_classes=classes
        )
        registered.append(dataset)
        label_root = root / f"sem_seg_{split}"
        if label_root.is_dir():
            dataset = _register(
                f"{name}_sem_seg_{split}", partial(load_sem_seg_labels, json_file, image_root, label_root)
            )
            MetadataCatalog.get(dataset).set(
                stuff_classes=["background", *classes],
                ignore_label=IGNORE_LABEL,
                evaluator_type="sem_seg",
                image_root=str(image_root),
                sem_seg_root=str(label_root),
            )
            registered.append(dataset)
    return registered


CATEGORY_KEYS = {"id": int, "name": str}
IMAGE_KEYS = {"file_name": str, "height": int, "width": int}


def _read_instances(json_file: Path) -> dict:
    """A COCO instances file, after checking that it is one (a clear error up front rather than a KeyError deep
    inside a data loader): images, annotations and categories lists, every category with an integer id and a
    name, every image with a file name and its size."""
    try:
        with open(json_file) as file:
            content = json.load(file)
        if not isinstance(content, dict):
            raise TypeError(f"the top level is a {type(content).__name__}, not an object")
        missing = [key for key in ("images", "annotations", "categories") if not isinstance(content.get(key), list)]
        if missing:
            raise KeyError(f"no list under {', '.join(map(repr, missing))}")
        for kind, required in (("categories", CATEGORY_KEYS), ("images", IMAGE_KEYS)):
            for index, entry in enumerate(content[kind]):
                entry = entry if isinstance(entry, dict) else {}
                bad = [f"{key} ({type_.__name__})" for key, type_ in required.items()
                       if not isinstance(entry.get(key), type_)]  # fmt: skip
                if bad:
                    raise KeyError(f"{kind}[{index}] lacks {' and '.join(bad)}: {content[kind][index]!r:.80}")
        return content
    except (ValueError, KeyError, TypeError) as error:
        raise malformed(json_file, error) from error


def malformed(json_file: Path, error: Exception) -> ConfigError:
    reason = error.args[0] if isinstance(error, KeyError) and error.args else error
    return ConfigError(f"{json_file}: not a COCO-format instances annotation file ({type(error).__name__}: {reason})")


def _register(name: str, loader) -> str:
    """Register (or re-register) ``name``."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    return name


def register_generated(root: Optional[Union[str, Path]] = None) -> list[str]:
    """Generate the fashion_coco set if needed and register it: fashion_coco_{train,val} (instances) and
    fashion_coco_sem_seg_{train,val} (semantic labels)."""
    return register_coco_folder(generate(root or generated_root()), GENERATED_NAME)
