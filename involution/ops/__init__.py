from .op import BACKENDS, canonical_backend, fused_involution2d, fusion_pays, involution2d, local_correlation
from .reference import involution2d_reference, local_correlation_reference

__all__ = [
    "BACKENDS",
    "canonical_backend",
    "fused_involution2d",
    "fusion_pays",
    "involution2d",
    "involution2d_reference",
    "local_correlation",
    "local_correlation_reference",
]
