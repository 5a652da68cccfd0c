"""Detectron2 runs in the run store: the config a detection grid's cell resolves to, and the names its records
and tables use. Imports no Detectron2 (only training a run and expanding a grid need it).

A detection run's config, as its record keeps it::

    {"kind": "detectron2",
     "source": {"config_file": "detectron2_ext/configs/...yaml", "opts": {"SOLVER.MAX_ITER": 100, ...}},
     "detectron2": {...}}   # the whole resolved Detectron2 config: what the run id hashes

"source" says where the config came from and is left out of the id (ablations.records.NON_RESULT_KEYS), as are
the keys that do not change a result (output folder, loader workers, device).
"""

from dataclasses import dataclass

KIND = "detectron2"
CLASSIFICATION = "classification"
ARCHITECTURES = {"RetinaNet": "RetinaNet", "SemanticSegmentor": "Semantic FPN"}
FAMILIES = {"rednet": "RedNet", "resnet": "ResNet"}


@dataclass
class DetectionConfig:
    source: dict  # config_file (relative to the repository when inside it) and opts (KEY -> value)
    detectron2: dict  # the resolved Detectron2 config
    kind: str = KIND


def kind(config: dict) -> str:
    """The kind of a run from its (record's) config: "detectron2" or "classification"."""
    return config.get("kind", CLASSIFICATION)


def parts(cfg: dict) -> dict:
    """detector, backbone, neck and head of a resolved Detectron2 config, named as results/paper/coco.csv and
    cityscapes.csv name them (head "" for RetinaNet, None for segmentation)."""
    model = cfg["MODEL"]
    architecture = model["META_ARCHITECTURE"]
    detector = ARCHITECTURES.get(architecture) or ("Mask R-CNN" if model["MASK_ON"] else "Faster R-CNN")
    backbone = model["REDNET"]["NAME"]
    family = backbone.rstrip("0123456789")
    involution_head = model["RPN"]["HEAD_NAME"] == "InvolutionRPNHead" or (
        model["MASK_ON"] and model["ROI_MASK_HEAD"]["NAME"] == "InvolutionMaskHead"
    )
    head = {"RetinaNet": "", "SemanticSegmentor": None}.get(architecture, "involution" if involution_head else "conv")
    return {
        "detector": detector,
        "backbone": f"{FAMILIES.get(family, family)}-{backbone[len(family) :]}",
        "neck": "involution" if model["INVOLUTION"]["NECK"] else "conv",
        "head": head,
    }


def model_name(cfg: dict) -> str:
    """e.g. "Mask R-CNN RedNet-50, involution neck, conv head"."""
    named = parts(cfg)
    variant = f", {named['neck']} neck" + (f", {named['head']} head" if named["head"] else "")
    return f"{named['detector']} {named['backbone']}{variant}"


def train(config: DetectionConfig, out_dir, progress: bool = False, job_id=None):
    """detectron2_ext.run.train (imported only when a detection run trains; Detectron2 logs its own progress)."""
    from detectron2_ext.run import train as train_detection

    return train_detection(config, out_dir, job_id=job_id)


# Record field -> (Detectron2 evaluation task, metric), in percent as Detectron2 reports them.
METRICS = {
    "box_ap": ("bbox", "AP"),
    "box_ap50": ("bbox", "AP50"),
    "box_ap75": ("bbox", "AP75"),
    "box_ap_small": ("bbox", "APs"),
    "box_ap_medium": ("bbox", "APm"),
    "box_ap_large": ("bbox", "APl"),
    "mask_ap": ("segm", "AP"),
    "miou": ("sem_seg", "mIoU"),
}
