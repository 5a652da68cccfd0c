"""Params and FLOPs of every config beside the published table: ``python -m detectron2_ext.complexity``.

Counted as the official (mmdet/mmseg) numbers were: parameters that train (frozen stem and res2 left out),
FLOPs as multiply-adds under the paper's convention (involution.complexity) of the forward pass their tool
measures: the backbone and neck on one 1280x800 image (1024x2048 for segmentation), the dense heads on every
level, and for two-stage detectors the box head on 1000 RoIs and the mask head on 100.
"""

import argparse

import torch
from detectron2.modeling import build_model
from torch import nn

from involution.complexity import count_flops
from involution.published import published_rows

from .config import CONFIG_DIR, load_config

DETECTION_SIZE = (800, 1280)
SEGMENTATION_SIZE = (1024, 2048)
BOX_ROIS, MASK_ROIS = 1000, 100
# config -> (published table, its key columns; None where the table has no head column or leaves it empty)
PUBLISHED = {
    "faster_rcnn_red50_fpn_1x": ("coco", "Faster R-CNN", "RedNet-50", "conv", "conv"),
    "faster_rcnn_red50_neck_fpn_1x": ("coco", "Faster R-CNN", "RedNet-50", "involution", "conv"),
    "faster_rcnn_red50_neck_fpn_head_1x": ("coco", "Faster R-CNN", "RedNet-50", "involution", "involution"),
    "faster_rcnn_r50_fpn_1x": ("coco", "Faster R-CNN", "ResNet-50", "conv", "conv"),
    "mask_rcnn_red50_fpn_1x": ("coco", "Mask R-CNN", "RedNet-50", "conv", "conv"),
    "mask_rcnn_red50_neck_fpn_1x": ("coco", "Mask R-CNN", "RedNet-50", "involution", "conv"),
    "mask_rcnn_red50_neck_fpn_head_1x": ("coco", "Mask R-CNN", "RedNet-50", "involution", "involution"),
    "mask_rcnn_r50_fpn_1x": ("coco", "Mask R-CNN", "ResNet-50", "conv", "conv"),
    "retinanet_red50_fpn_1x": ("coco", "RetinaNet", "RedNet-50", "conv", None),
    "retinanet_red50_neck_fpn_1x": ("coco", "RetinaNet", "RedNet-50", "involution", None),
    "retinanet_r50_fpn_1x": ("coco", "RetinaNet", "ResNet-50", "conv", None),
    "semantic_fpn_red50": ("cityscapes", "Semantic FPN", "RedNet-50", "conv", None),
    "semantic_fpn_red50_neck": ("cityscapes", "Semantic FPN", "RedNet-50", "involution", None),
    "semantic_fpn_r50": ("cityscapes", "Semantic FPN", "ResNet-50", "conv", None),
}


def published(config_name: str) -> dict:
    table, model, backbone, neck, head = PUBLISHED[config_name]
    for row in published_rows(table):
        name = row.get("detector") or row.get("method")
        if (name, row["backbone"], row["neck"], row.get("head")) == (model, backbone, neck, head):
            return {"params_m": row["params_m"], "flops_g": row["flops_g"]}
    raise KeyError(f"{config_name}: no row in results/paper/{table}.csv")


class DenseForward(nn.Module):
    """Backbone, neck and the heads that run on every feature level (the whole model for RetinaNet and
    Semantic FPN)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        model = self.model
        features = model.backbone(image)
        if hasattr(model, "sem_seg_head"):
            return model.sem_seg_head.layers(features)
        if hasattr(model, "head_in_features"):  # RetinaNet
            return model.head([features[name] for name in model.head_in_features])
        return model.proposal_generator.rpn_head([features[name] for name in model.proposal_generator.in_features])


class RoIHead(nn.Module):
    """The box head and predictor, or the mask head's layers, on pooled RoI features."""

    def __init__(self, roi_heads: nn.Module, mask: bool):
        super().__init__()
        self.roi_heads, self.mask = roi_heads, mask

    def forward(self, pooled: torch.Tensor):
        if self.mask:
            return self.roi_heads.mask_head.layers(pooled)
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))


def flops(model: nn.Module, image_size: tuple[int, int]) -> int:
    """FLOPs of the dense part on one image plus, for two-stage detectors, the box head on BOX_ROIS RoIs and
    the mask head on MASK_ROIS (count_flops counts one sample: for the RoI heads, one RoI)."""
    total = count_flops(DenseForward(model), (3, *image_size))
    heads = getattr(model, "roi_heads", None)
    if heads is not None:
        channels = model.backbone.output_shape()[heads.box_in_features[0]].channels
        total += BOX_ROIS * count_flops(RoIHead(heads, mask=False), (channels, *heads.box_pooler.output_size))
        if heads.mask_on:
            total += MASK_ROIS * count_flops(RoIHead(heads, mask=True), (channels, *heads.mask_pooler.output_size))
    return total


def complexity(config_name: str) -> dict:
    cfg = load_config(CONFIG_DIR / f"{config_name}.yaml", ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    size = SEGMENTATION_SIZE if cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor" else DETECTION_SIZE
    return {
        "config": config_name,
        "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "flops_g": flops(model, size) / 1e9,
        "size": size,
        **{f"published_{key}": value for key, value in published(config_name).items()},
    }


def format_rows(rows: list[dict]) -> str:
    header = (
        f"{'config':<34} {'input':>9} {'params M':>8} {'paper':>6} {'d M':>6} {'GFLOPs':>7} {'paper':>6} {'d %':>6}"
    )
    lines = [header]
    for r in rows:
        size = f"{r['size'][1]}x{r['size'][0]}"
        lines.append(
            f"{r['config']:<34} {size:>9} {r['params_m']:>8.2f} {r['published_params_m']:>6.1f} "
            f"{r['params_m'] - r['published_params_m']:>+6.2f} {r['flops_g']:>7.1f} {r['published_flops_g']:>6.1f} "
            f"{100 * (r['flops_g'] / r['published_flops_g'] - 1):>+6.1f}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Params and FLOPs of the detectron2_ext configs vs the paper.")
    parser.add_argument("--configs", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED), metavar="CONFIG")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(format_rows([complexity(name) for name in args.configs]))


if __name__ == "__main__":
    main()
