"""Involution (Li et al., CVPR 2021): an exact, fast operator, the Involution2d layer and RedNet models."""
from .module import Involution2d
from .ops import BACKENDS, involution2d

__all__ = ["BACKENDS", "Involution2d", "involution2d"]
