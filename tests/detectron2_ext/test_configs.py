"""Every config builds, its trainable parameters match the published table, and bad keys fail clearly."""

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from ablations.config import ConfigError  # noqa: E402
from detectron2_ext import complexity  # noqa: E402
from detectron2_ext.config import CONFIG_DIR, load_config  # noqa: E402
from involution.complexity import count_flops  # noqa: E402

PUBLISHED_CONFIGS = sorted(complexity.PUBLISHED)
ALL_CONFIGS = sorted(path.relative_to(CONFIG_DIR) for path in CONFIG_DIR.rglob("*.yaml") if path.name[0].islower())


def test_every_published_config_is_in_the_table_and_the_folder():
    assert {str(p.with_suffix("")) for p in ALL_CONFIGS} >= set(PUBLISHED_CONFIGS)


@pytest.mark.parametrize("name", ALL_CONFIGS, ids=str)
def test_config_builds(name):
    cfg = load_config(CONFIG_DIR / name, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6


@pytest.mark.parametrize("name", PUBLISHED_CONFIGS)
def test_trainable_parameters_match_the_paper(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml", ["MODEL.DEVICE", "cpu"])
    trainable = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad) / 1e6
    assert trainable == pytest.approx(complexity.published(name)["params_m"], abs=0.2)


def test_roi_heads_are_counted_per_roi():
    """The box head runs on 1000 RoIs: its FC layers' multiply-adds (and ReLUs) times 1000."""
    cfg = load_config(
        CONFIG_DIR / "faster_rcnn_red50_fpn_1x.yaml", ["MODEL.REDNET.NAME", "rednet26", "MODEL.DEVICE", "cpu"]
    )
    model = build_model(cfg)
    dense = count_flops(complexity.DenseForward(model), (3, 64, 64))
    box_head = (256 * 49 + 1) * 1024 + (1024 + 1) * 1024 + 2 * 1024 + (1024 + 1) * (81 + 320)
    with torch.no_grad():
        assert complexity.flops(model, (64, 64)) == dense + complexity.BOX_ROIS * box_head


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="MODEL.REDNET.DEPTH"):
        load_config(CONFIG_DIR / "mask_rcnn_red50_fpn_1x.yaml", ["MODEL.REDNET.DEPTH", "50"])


def test_unknown_key_in_a_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG_DIR / "faster_rcnn_red50_fpn_1x.yaml"}"\nMODEL:\n  INVOLUTION:\n    NEK: True\n')
    with pytest.raises(ConfigError, match="MODEL.INVOLUTION.NEK"):
        load_config(bad)


@pytest.mark.parametrize(
    "opts, message",
    [(["SOLVER.MAX_ITER", "many"], "Type mismatch .* for config key: SOLVER.MAX_ITER"),
     (["SOLVER.MAX_ITER"], "Override list has odd length")],
)  # fmt: skip
def test_bad_values_are_named(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG_DIR / "faster_rcnn_red50_fpn_1x.yaml", opts)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"--config-file: no such file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
