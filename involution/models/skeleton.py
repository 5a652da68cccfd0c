"""The ResNet skeleton every model here shares: a stem, four stages of bottlenecks, a classifier.

Only the bottleneck's spatial operator (its "mixer": 3x3 convolution, involution or local
self-attention) and the stem differ between ResNet, RedNet and the self-attention baseline. Module
names follow OpenMMLab's ResNet (stem, layer1..4, conv1/bn1..conv3/bn3, downsample, head.fc), which the
official RedNet checkpoints use.
"""

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..module import ConvModule, Involution2d
from .attention import AttentionStem

STEMS = ("involution", "conv", "small", "attention")
EXPANSION = 4

# mixer(channels, stride=stride) -> a module mapping (B, channels, H, W) to (B, channels, H/stride, W/stride).
Mixer = Callable[..., nn.Module]


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, stride: int, mixer: Mixer):
        super().__init__()
        out_channels = mid_channels * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = mixer(mid_channels, stride=stride)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision's ResNet: no new tensor (BN's backward does not need its output)
        return self.relu(out)


def conv3x3_mixer(channels: int, stride: int = 1) -> nn.Module:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False)


def make_stem(
    kind: str, in_chans: int, width: int, kernel_size: int, small_stride: int, backend: str
) -> tuple[nn.Module, nn.Module]:
    """(stem, pool). "involution": RedNet's (3x3 conv /2, KxK involution, 3x3 conv, max pool /2);
    "conv": ResNet's (7x7 conv /2, max pool /2); "small": one 3x3 conv with stride small_stride, for
    small images (28x28, 32x32); "attention": SASA's full-attention stem (self-attention within each 4x4
    block with spatially aware values, BN, 4x4 max pool /4, as the SASA paper describes it: no ReLU, and no
    spatial convolution)."""
    max_pool = nn.MaxPool2d(3, 2, 1)
    if kind == "involution":
        half = width // 2
        stem = nn.Sequential(
            ConvModule(in_chans, half, 3, stride=2),
            Involution2d(half, kernel_size, group_channels=min(16, half), backend=backend),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            ConvModule(half, width, 3),
        )
        return stem, max_pool
    if kind == "conv":
        return nn.Sequential(ConvModule(in_chans, width, 7, stride=2)), max_pool
    if kind == "small":
        return nn.Sequential(ConvModule(in_chans, width, 3, stride=small_stride)), nn.Identity()
    if kind == "attention":
        stem = AttentionStem(in_chans, width)
        return nn.Sequential(stem, nn.BatchNorm2d(width)), nn.MaxPool2d(stem.window, ceil_mode=True)
    raise ValueError(f"unknown stem {kind!r}, expected one of {STEMS}")


class ClassifierHead(nn.Module):
    """Global average pool, dropout, linear classifier (none with num_classes=0: pooled features)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        return self.fc(self.drop(self.pool(x).flatten(1)))


class BottleneckNet(nn.Module):
    """Stem, four bottleneck stages (widths width * 2^i, x4 expansion, stride 2 from stage 2), classifier.

    ``forward`` returns logits, or with ``out_indices`` (stage numbers 0..3) the list of those stages'
    feature maps (for detection). ``num_classes=0`` builds no classifier: logits become pooled features.

    Initialisation: every convolution's weight Kaiming-normal (fan out), BatchNorm 1/0, the last BatchNorm of
    each block 0 (``zero_init_residual``), as the official RedNet. ``official_init=True`` also does what the
    official code does to biases and the classifier (mmcv's kaiming_init and mmcls' LinearClsHead): convolution
    biases (the kernel generation's) 0, classifier weights N(0, 0.01) and bias 0; without it those keep PyTorch's
    default (uniform) initialisation, as every model here was trained before the switch existed.
    """

    def __init__(
        self,
        depths: Sequence[int],
        mixer: Mixer,
        stem: str = "conv",
        stem_kernel_size: int = 3,
        small_stem_stride: int = 1,
        in_chans: int = 3,
        num_classes: int = 1000,
        width: int = 64,
        drop_rate: float = 0.0,
        out_indices: Optional[Sequence[int]] = None,
        zero_init_residual: bool = True,
        official_init: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"depths must list the blocks of 4 stages, got {tuple(depths)}")
        if out_indices is not None and not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f"out_indices must be stage numbers 0..3, got {tuple(out_indices)}")
        self.depths = tuple(depths)
        self.out_indices = None if out_indices is None else tuple(out_indices)
        self.stem, self.maxpool = make_stem(stem, in_chans, width, stem_kernel_size, small_stem_stride, backend)
        in_channels = width
        self.feature_info = []
        reduction = small_stem_stride if stem == "small" else 4
        for index, depth in enumerate(depths):
            mid, stride = width * 2**index, 1 if index == 0 else 2
            blocks = [Bottleneck(in_channels, mid, stride, mixer)]
            in_channels = mid * EXPANSION
            blocks += [Bottleneck(in_channels, mid, 1, mixer) for _ in range(depth - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            reduction *= stride
            self.feature_info.append({"num_chs": in_channels, "reduction": reduction, "module": f"layer{index + 1}"})
        self.num_features = in_channels
        self.drop_rate = drop_rate
        self.head = ClassifierHead(in_channels, num_classes, drop_rate)
        self._init_weights(zero_init_residual, official_init)

    def _init_weights(self, zero_init_residual: bool, official_init: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if official_init and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual block starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
        if official_init and isinstance(self.head.fc, nn.Linear):
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.stem(x))
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.head = ClassifierHead(self.num_features, num_classes, self.drop_rate)

    def forward(self, x: torch.Tensor):
        if self.out_indices is not None:
            features = self.forward_stages(x)
            return [features[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))
