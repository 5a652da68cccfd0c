"""Model registry: ``build_model("rednet50", **overrides)``, ``list_models("rednet*")``."""

from . import zoo  # noqa: F401  (registers the models)
from .registry import build_model, list_models, register_model
from .skeleton import BottleneckNet

__all__ = ["BottleneckNet", "build_model", "list_models", "register_model"]
