"""Official checkpoint import, on state dicts written from the documented official naming scheme."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from involution.checkpoint import load_official
from involution.models import build_model

DEPTHS = (1, 2, 4, 1)  # RedNet-26


def official_state_dict(stem_kernel=3, num_classes=1000, downstream=False):
    """Random tensors under the official OpenMMLab names and shapes (shared/reference's key scheme)."""
    sd = {}

    def conv(name, out_c, in_c, k=1, bias=False):
        sd[f"{name}.weight"] = torch.randn(out_c, in_c, k, k) * (in_c * k * k) ** -0.5
        if bias:
            sd[f"{name}.bias"] = torch.randn(out_c) * 0.1

    def bn(name, c):
        sd.update(
            {
                f"{name}.weight": torch.rand(c) * 0.5 + 0.5,
                f"{name}.bias": torch.randn(c) * 0.1,
                f"{name}.running_mean": torch.randn(c) * 0.1,
                f"{name}.running_var": torch.rand(c) + 0.5,
                f"{name}.num_batches_tracked": torch.tensor(1000),
            }
        )

    def involution(name, c, k):
        conv(f"{name}.conv1.conv", c // 4, c)
        bn(f"{name}.conv1.bn", c // 4)
        conv(f"{name}.conv2.conv", k * k * c // 16, c // 4, bias=True)

    conv("backbone.stem.0.conv", 32, 3, 3)
    bn("backbone.stem.0.bn", 32)
    involution("backbone.stem.1", 32, stem_kernel)
    bn("backbone.stem.2", 32)
    conv("backbone.stem.4.conv", 64, 32, 3)
    bn("backbone.stem.4.bn", 64)
    in_c = 64
    for layer, depth in enumerate(DEPTHS, 1):
        mid = 64 * 2 ** (layer - 1)
        for block in range(depth):
            p = f"backbone.layer{layer}.{block}"
            conv(f"{p}.conv1", mid, in_c)
            bn(f"{p}.bn1", mid)
            involution(f"{p}.conv2", mid, 7)
            bn(f"{p}.bn2", mid)
            conv(f"{p}.conv3", 4 * mid, mid)
            bn(f"{p}.bn3", 4 * mid)
            if block == 0:
                conv(f"{p}.downsample.0", 4 * mid, in_c)
                bn(f"{p}.downsample.1", 4 * mid)
            in_c = 4 * mid
    if num_classes:
        sd["head.fc.weight"] = torch.randn(num_classes, 2048) * 0.02
        sd["head.fc.bias"] = torch.randn(num_classes) * 0.02
    if downstream:
        conv("neck.fpn_convs.0.conv1.conv", 64, 256)
        conv("rpn_head.rpn_conv", 256, 256, 3)
    return {"meta": {"epoch": 130, "mmcls_version": "0.12.0"}, "state_dict": sd}


def official_forward(sd, x, stem_kernel=3):
    """The official architecture, written from the key scheme: floor average pool and unfold involution."""
    sd = {k.removeprefix("backbone."): v for k, v in sd.items()}

    def bn(t, name):
        return F.batch_norm(
            t,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            False,
            0.0,
            1e-5,
        )

    def involution(t, name, k, stride):
        w = F.avg_pool2d(t, stride, stride) if stride > 1 else t
        w = F.relu(bn(F.conv2d(w, sd[f"{name}.conv1.conv.weight"]), f"{name}.conv1.bn"))
        w = F.conv2d(w, sd[f"{name}.conv2.conv.weight"], sd[f"{name}.conv2.conv.bias"])
        b, c, h, wd = w.shape[0], t.shape[1], w.shape[2], w.shape[3]
        g = c // 16
        cols = F.unfold(t, k, 1, (k - 1) // 2, stride).view(b, g, c // g, k * k, h, wd)
        return (w.view(b, g, k * k, h, wd).unsqueeze(2) * cols).sum(3).view(b, c, h, wd)

    x = F.relu(bn(F.conv2d(x, sd["stem.0.conv.weight"], stride=2, padding=1), "stem.0.bn"))
    x = F.relu(bn(involution(x, "stem.1", stem_kernel, 1), "stem.2"))
    x = F.relu(bn(F.conv2d(x, sd["stem.4.conv.weight"], padding=1), "stem.4.bn"))
    x = F.max_pool2d(x, 3, 2, 1)
    features = []
    for layer, depth in enumerate(DEPTHS, 1):
        for block in range(depth):
            p = f"layer{layer}.{block}"
            stride = 2 if block == 0 and layer > 1 else 1
            identity = x
            if block == 0:
                identity = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(involution(out, f"{p}.conv2", 7, stride), f"{p}.bn2"))
            x = F.relu(bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3") + identity)
        features.append(x)
    if "head.fc.weight" not in sd:
        return features
    return F.linear(x.mean((2, 3)), sd["head.fc.weight"], sd["head.fc.bias"])


@torch.no_grad()
def test_classification_checkpoint_gives_the_official_logits(tmp_path):
    checkpoint = official_state_dict()
    torch.save(checkpoint, tmp_path / "rednet26.pth")
    model = build_model("rednet26").eval()
    report = load_official(model, tmp_path / "rednet26.pth")
    assert report.complete and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), official_forward(checkpoint["state_dict"], x), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_bare_state_dict_without_backbone_prefix():
    sd = {k.removeprefix("backbone."): v for k, v in official_state_dict()["state_dict"].items()}
    model = build_model("rednet26").eval()
    assert load_official(model, sd).complete
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), official_forward(sd, x), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_detection_checkpoint_backbone_with_k7_stem():
    checkpoint = official_state_dict(stem_kernel=7, num_classes=0, downstream=True)
    model = build_model("rednet26", stem_kernel_size=7, num_classes=0, out_indices=(0, 1, 2, 3)).eval()
    report = load_official(model, checkpoint)
    assert report.complete
    assert sorted(report.ignored) == ["neck.fpn_convs.0.conv1.conv.weight", "rpn_head.rpn_conv.weight"]
    x = torch.randn(1, 3, 64, 64)
    for ours, official in zip(model(x), official_forward(checkpoint["state_dict"], x, stem_kernel=7)):
        torch.testing.assert_close(ours, official, atol=1e-4, rtol=1e-4)


def test_detection_checkpoint_into_a_classifier_names_every_problem():
    checkpoint = official_state_dict(stem_kernel=7, num_classes=0)
    model = build_model("rednet26")
    with pytest.raises(ValueError) as error:
        load_official(model, checkpoint)
    message = str(error.value)
    assert "shape mismatch stem.1.conv2.conv.weight: checkpoint (98, 8, 1, 1) vs model (18, 8, 1, 1)" in message
    assert "2 missing from the checkpoint: head.fc.weight, head.fc.bias" in message
    assert "stem_kernel_size=7" in message and "num_classes=0" in message


def test_partial_load_when_asked_loads_the_rest():
    checkpoint = official_state_dict(stem_kernel=7, num_classes=0)
    model = build_model("rednet26")
    report = load_official(model, checkpoint, allow_partial=True)
    assert not report.complete
    assert [name for name, *_ in report.mismatched] == ["stem.1.conv2.conv.weight", "stem.1.conv2.conv.bias"]
    torch.testing.assert_close(model.layer1[0].conv1.weight, checkpoint["state_dict"]["backbone.layer1.0.conv1.weight"])


def test_unexpected_and_missing_keys_are_named():
    sd = official_state_dict()["state_dict"]
    sd["backbone.layer9.0.conv1.weight"] = torch.zeros(1)
    del sd["backbone.layer3.2.bn2.running_var"]
    with pytest.raises(
        ValueError,
        match=r"(?s)1 missing from the checkpoint: layer3.2.bn2.running_var.*"
        r"1 not in the model: layer9.0.conv1.weight",
    ):
        load_official(build_model("rednet26"), sd)


def test_refuses_checkpoints_that_need_unpickling(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"hook": Path("x")}}, path)
    with pytest.raises(ValueError, match="refusing to unpickle arbitrary objects"):
        load_official(build_model("rednet26"), path)


@torch.no_grad()
def test_torch_hub_entry_point_loads_a_local_checkpoint(tmp_path):
    checkpoint = official_state_dict()
    torch.save(checkpoint, tmp_path / "rednet26.pth")
    repo = Path(__file__).resolve().parents[1]
    model = torch.hub.load(str(repo), "rednet26", source="local", checkpoint=str(tmp_path / "rednet26.pth")).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), official_forward(checkpoint["state_dict"], x), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_torchvision_resnet50_gives_torchvision_logits(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    for module in reference.modules():  # statistics and affine weights away from their initial 0/1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.1, 0.1)
    torch.save(reference.state_dict(), tmp_path / "resnet50_torchvision.pth")
    model = build_model("resnet50").eval()
    report = load_official(model, tmp_path / "resnet50_torchvision.pth")
    assert report.complete and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), reference.eval()(x))
