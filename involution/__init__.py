"""Involution (Li et al., CVPR 2021): an exact, fast operator, the Involution2d layer and RedNet models."""

from .complexity import count_flops, count_params
from .models import build_model, list_models
from .module import Involution2d
from .ops import BACKENDS, fused_involution2d, involution2d, local_correlation

__all__ = [
    "BACKENDS",
    "Involution2d",
    "build_model",
    "count_flops",
    "count_params",
    "fused_involution2d",
    "involution2d",
    "list_models",
    "local_correlation",
]
