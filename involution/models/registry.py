"""Model registry: each variant is a small function registered by name; build_model(name, **overrides)."""

import fnmatch
import re
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = builder.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = builder
    return builder


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. "rednet*", in natural order."""
    return sorted(fnmatch.filter(_MODELS, pattern), key=_natural_key)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def build_model(name: str, **overrides) -> nn.Module:
    """The registered model ``name``, with any constructor arguments overridden (the caller's win)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name](**overrides)
