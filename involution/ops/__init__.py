from .op import BACKENDS, involution2d
from .reference import involution2d_reference

__all__ = ["BACKENDS", "involution2d", "involution2d_reference"]
