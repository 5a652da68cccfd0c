"""The registered parts: RedNet backbone, involution FPN neck, involution RPN and mask heads, weight import."""

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY  # noqa: E402
from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY, StandardRPNHead  # noqa: E402
from detectron2.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY  # noqa: E402
from torch import nn  # noqa: E402

from detectron2_ext.backbone import RedNetBackbone  # noqa: E402
from detectron2_ext.config import CONFIG_DIR, load_config  # noqa: E402
from detectron2_ext.heads import InvolutionMaskHead, InvolutionRPNHead  # noqa: E402
from detectron2_ext.neck import InvolutionFPN  # noqa: E402
from involution import Involution2d, build_model  # noqa: E402

INVOLUTION = {"kernel_size": 7, "group_channels": 16, "reduction_ratio": 4}


def test_parts_are_registered():
    assert "build_rednet_fpn_backbone" in BACKBONE_REGISTRY
    assert "build_rednet_retinanet_fpn_backbone" in BACKBONE_REGISTRY
    assert RPN_HEAD_REGISTRY.get("InvolutionRPNHead") is InvolutionRPNHead
    assert ROI_MASK_HEAD_REGISTRY.get("InvolutionMaskHead") is InvolutionMaskHead


@pytest.mark.parametrize("height, width", [(97, 131), (64, 64)])
def test_backbone_stages_on_any_size(height, width):
    backbone = RedNetBackbone("rednet26").eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    shapes = backbone.output_shape()
    assert list(features) == ["res2", "res3", "res4", "res5"]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (1, shapes[name].channels, -(-height // stride), -(-width // stride))
    assert backbone.size_divisibility == 32


def test_backbone_freezes_stem_and_res2_and_batchnorm_statistics():
    backbone = RedNetBackbone("rednet26", freeze_at=2, norm_eval=True).train()
    frozen = [backbone.net.stem, backbone.net.layer1]
    assert all(not p.requires_grad for module in frozen for p in module.parameters())
    assert all(p.requires_grad for p in backbone.net.layer2.parameters())
    assert not any(m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    before = backbone.net.layer3[0].bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.net.layer3[0].bn1.running_mean, before)

    trained_statistics = RedNetBackbone("rednet26", freeze_at=1, norm_eval=False).train()
    assert trained_statistics.net.layer1[0].bn1.training and not trained_statistics.net.stem[2].training


def test_backbone_rejects_unknown_stages():
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        RedNetBackbone("rednet26", out_features=["res6"])


def test_involution_fpn_replaces_only_the_output_convolutions():
    cfg = load_config(CONFIG_DIR / "faster_rcnn_red50_neck_fpn_1x.yaml", ["MODEL.REDNET.NAME", "rednet26"])
    fpn = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))
    assert isinstance(fpn, InvolutionFPN)
    outputs = [getattr(fpn, f"fpn_output{stage}") for stage in (2, 3, 4, 5)]
    assert all(isinstance(layer, Involution2d) and layer.kernel_size == 7 for layer in outputs)
    assert fpn.output_convs == outputs[::-1]
    assert all(isinstance(getattr(fpn, f"fpn_lateral{stage}"), nn.Conv2d) for stage in (2, 3, 4, 5))
    features = fpn.eval()(torch.randn(1, 3, 96, 160))
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    assert features["p2"].shape == (1, 256, 24, 40) and features["p6"].shape == (1, 256, 2, 3)


def test_involution_rpn_head():
    head = InvolutionRPNHead(in_channels=256, num_anchors=3, involution=INVOLUTION)
    standard = StandardRPNHead(in_channels=256, num_anchors=3)
    assert isinstance(head.conv[0], Involution2d) and isinstance(head.conv[1], nn.ReLU)
    features = [torch.randn(2, 256, 20, 30), torch.randn(2, 256, 10, 15)]
    for ours, theirs in zip(*(h(features) for h in (head, standard))):
        assert [t.shape for t in ours] == [t.shape for t in theirs]


def test_involution_mask_head():
    head = InvolutionMaskHead(ShapeSpec(channels=256), num_classes=10, conv_dims=[256] * 5, involution=INVOLUTION)
    layers = [getattr(head, f"mask_fcn{k}") for k in range(1, 5)]
    assert all(isinstance(layer[0], Involution2d) and isinstance(layer[1], nn.ReLU) for layer in layers)
    assert list(head.children())[:4] == layers
    assert head.layers(torch.randn(3, 256, 14, 14)).shape == (3, 10, 28, 28)


def test_involution_cannot_change_channels():
    with pytest.raises(ValueError, match="keeps the channel count"):
        InvolutionRPNHead(in_channels=256, num_anchors=3, conv_dims=[128], involution=INVOLUTION)


def _official_checkpoint(stem_kernel_size: int) -> dict:
    classifier = build_model("rednet26", stem_kernel_size=stem_kernel_size)
    return {"meta": {}, "state_dict": {f"backbone.{k}" if not k.startswith("head.") else k: v
                                       for k, v in classifier.state_dict().items()}}  # fmt: skip


def test_pretrained_weights_official_and_ours(tmp_path):
    official = tmp_path / "official.pth"
    torch.save(_official_checkpoint(7), official)
    backbone = RedNetBackbone("rednet26")
    backbone.load_pretrained(str(official))
    expected = torch.load(official, weights_only=True)["state_dict"]["backbone.layer3.1.conv2.conv2.conv.weight"]
    assert torch.equal(backbone.net.layer3[1].conv2.conv2.conv.weight, expected)

    ours = tmp_path / "checkpoint.pt"  # ablations.train's format: the weights under "model"
    classifier = build_model("rednet26", stem_kernel_size=7)
    torch.save({"model": classifier.state_dict(), "optimizer": {}, "history": []}, ours)
    backbone.load_pretrained(str(ours))
    assert torch.equal(backbone.net.stem[0].conv.weight, classifier.stem[0].conv.weight)


def test_classification_stem_gets_a_clear_message(tmp_path):
    path = tmp_path / "rednet26_imagenet.pth"
    torch.save(_official_checkpoint(3), path)
    with pytest.raises(ValueError, match=r"K=3 .* K=7 \(MODEL.REDNET.STEM_KERNEL_SIZE"):
        RedNetBackbone("rednet26").load_pretrained(str(path))
    RedNetBackbone("rednet26", stem_kernel_size=3).load_pretrained(str(path))  # as the message says
    with pytest.raises(ValueError, match="no such file"):
        RedNetBackbone("rednet26").load_pretrained(str(tmp_path / "missing.pth"))
