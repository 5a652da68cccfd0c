"""Import of the official (OpenMMLab / mmcls) RedNet checkpoints and of torchvision's ResNets.

The official classification checkpoints hold ``{"meta": ..., "state_dict": ...}`` with keys
``backbone.*`` and ``head.fc.*``; the detection/segmentation ones keep ``backbone.*`` and add ``neck.*``,
``rpn_head.*``, ``roi_head.*`` or ``decode_head.*``. This repository's models use the same names below
``backbone.``, so importing is renaming plus checking, and nothing is loaded silently partially.
torchvision's ResNet state dicts (``torchvision.models.resnet50().state_dict()`` saved to a file) name the
stem ``conv1``/``bn1`` and the classifier ``fc``; the stages (``layer1..4``, ResNet v1.5: stride on the 3x3)
are named as here, so they load into the ``resnet*`` models.
"""

import os
import pickle
from dataclasses import dataclass, field
from typing import Mapping, Union

import torch
from torch import nn

# Parts of downstream checkpoints that are not the backbone (or the classifier head).
DOWNSTREAM_PREFIXES = ("neck.", "rpn_head.", "roi_head.", "bbox_head.", "mask_head.", "decode_head.", "auxiliary_head.")


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list = field(default_factory=list)  # (name, checkpoint shape, model shape)
    ignored: list = field(default_factory=list)  # downstream parts (neck, heads) that a backbone does not use

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors, ignored {len(self.ignored)} downstream (neck/head) tensors"]
        for title, names in (("missing from the checkpoint", self.missing), ("not in the model", self.unexpected)):
            if names:
                lines.append(f"{len(names)} {title}: {', '.join(names)}")
        for name, checkpoint_shape, model_shape in self.mismatched:
            lines.append(f"shape mismatch {name}: checkpoint {checkpoint_shape} vs model {model_shape}")
        if any(name.startswith("stem.1.conv2.") for name, *_ in self.mismatched):
            lines.append(
                "hint: detection/segmentation checkpoints have a K=7 stem involution: "
                "build the model with stem_kernel_size=7"
            )
        if any(name.startswith("head.fc.") for name in self.missing):
            lines.append("hint: a backbone-only checkpoint: build the model with num_classes=0")
        return "\n".join(lines)


def read_state_dict(path_or_state_dict: Union[str, os.PathLike, Mapping]) -> dict:
    """The tensors of a checkpoint file (loaded with weights_only=True) or mapping, unwrapped from
    ``state_dict``."""
    checkpoint = path_or_state_dict
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        try:
            checkpoint = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{os.fspath(path_or_state_dict)}: not a plain-tensor checkpoint; refusing to unpickle arbitrary "
                f"objects (loaded with weights_only=True): {error}"
            ) from error
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"expected a checkpoint path or a state dict, got {type(checkpoint).__name__}")
    state_dict = checkpoint.get("state_dict", checkpoint)
    return {name: tensor for name, tensor in state_dict.items() if isinstance(tensor, torch.Tensor)}


# torchvision's ResNet names -> this repository's (the stem's 7x7 conv and BN, the classifier).
TORCHVISION_RENAMES = {"conv1.": "stem.0.conv.", "bn1.": "stem.0.bn.", "fc.": "head.fc."}


def to_model_names(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, list]:
    """Official names -> this repository's: drop ``backbone.`` (and a DDP ``module.``); set aside the
    downstream parts; rename torchvision's ResNet stem and classifier. Returns (renamed tensors, ignored
    names)."""
    renamed, ignored = {}, []
    for name, tensor in state_dict.items():
        name = name.removeprefix("module.")
        if name.startswith(DOWNSTREAM_PREFIXES):
            ignored.append(name)
        else:
            renamed[name.removeprefix("backbone.")] = tensor
    if "conv1.weight" in renamed:  # torchvision's layout: no stem module
        renamed = {_torchvision_to_model_name(name): tensor for name, tensor in renamed.items()}
    return renamed, ignored


def _torchvision_to_model_name(name: str) -> str:
    for prefix, replacement in TORCHVISION_RENAMES.items():
        if name.startswith(prefix):
            return replacement + name.removeprefix(prefix)
    return name


def load_official(
    model: nn.Module, path_or_state_dict: Union[str, os.PathLike, Mapping], allow_partial: bool = False
) -> LoadReport:
    """Load an official RedNet checkpoint (classification, or the backbone of a detection/segmentation
    one) into ``model``. Raises ValueError naming every missing, unexpected and mis-shaped tensor unless
    ``allow_partial``, in which case whatever matches is loaded and the report says what was not."""
    renamed, ignored = to_model_names(read_state_dict(path_or_state_dict))
    expected = model.state_dict()
    report = LoadReport(ignored=ignored)
    report.missing = [name for name in expected if name not in renamed]
    report.unexpected = [name for name in renamed if name not in expected]
    for name, tensor in renamed.items():
        if name not in expected:
            continue
        if tensor.shape != expected[name].shape:
            report.mismatched.append((name, tuple(tensor.shape), tuple(expected[name].shape)))
        else:
            report.loaded.append(name)
    if not report.complete and not allow_partial:
        raise ValueError(f"checkpoint does not match the model (pass allow_partial=True to load the rest):\n{report}")
    model.load_state_dict({name: renamed[name] for name in report.loaded}, strict=False)
    return report
