"""ImageNet weights for the detection backbones: torchvision's ResNet-50 for the *_r50_* baselines, and the
checkpoint of a K=7-stem RedNet run (ablations/configs/imagenet_stem7.yaml) for the RedNet configs."""

from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402
import yaml  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402

from ablations import train  # noqa: E402
from detectron2_ext.config import CONFIG_DIR, load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ABLATION_CONFIGS = REPO / "ablations" / "configs"


@torch.no_grad()
def test_torchvision_resnet50_weights_in_the_r50_baseline(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    cfg = load_config(
        CONFIG_DIR / "faster_rcnn_r50_fpn_1x.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.REDNET.PRETRAINED", str(tmp_path / "resnet50.pth")],
    )
    backbone = build_backbone(cfg).bottom_up.eval()
    x = torch.randn(1, 3, 64, 96)
    features = backbone(x)
    expected = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
    for stage, name in zip((reference.layer1, reference.layer2, reference.layer3, reference.layer4), features):
        expected = stage(expected)
        torch.testing.assert_close(features[name], expected)


def test_the_k7_stem_imagenet_config_is_the_imagenet_recipe_with_a_7x7_stem():
    plain = yaml.safe_load((ABLATION_CONFIGS / "imagenet.yaml").read_text())
    stem7 = yaml.safe_load((ABLATION_CONFIGS / "imagenet_stem7.yaml").read_text())
    assert stem7["model"].pop("options") == {"stem_kernel_size": 7}
    assert plain["model"].pop("options") == {}
    assert stem7 == plain


def test_a_k7_stem_run_checkpoint_is_the_detection_backbone(tmp_path):
    """A short real run of a K=7-stem RedNet-26 (the synthetic config at 32x32), then its checkpoint as
    MODEL.REDNET.PRETRAINED: the backbone holds the trained weights."""
    record = train.main([
        str(ABLATION_CONFIGS / "synthetic.yaml"), "--out", str(tmp_path), "--no-progress",
        "model.options={stem_kernel_size: 7}", "data.synthetic.image_size=32", "data.synthetic.train_size=32",
        "data.synthetic.val_size=16", "optim.epochs=1", "optim.batch_size=16",
    ])  # fmt: skip
    checkpoint = tmp_path / record.run_id / "checkpoint.pt"
    trained = torch.load(checkpoint, weights_only=True)["model"]
    cfg = load_config(
        CONFIG_DIR / "mask_rcnn_red50_fpn_1x.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.REDNET.NAME", "rednet26", "MODEL.REDNET.PRETRAINED", str(checkpoint)],
    )
    loaded = build_backbone(cfg).bottom_up.net.state_dict()
    assert set(loaded) == {name for name in trained if not name.startswith("head.")}
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0, msg=name)
