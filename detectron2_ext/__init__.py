"""A Detectron2 project: RedNet-FPN backbones, the involution neck and heads, and the configs of the paper's
detection and segmentation models. Importing it registers the parts in Detectron2's registries."""

from . import backbone, heads  # noqa: F401  (register the parts)
from .config import add_involution_config

__all__ = ["add_involution_config"]
