"""Grid files expand into validated cells with stable run ids; finished cells are skipped."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from ablations import grid, records, train
from ablations.config import ConfigError, RunConfig, from_dict, to_dict
from analysis.collect import collect
from slurm import launch

GRIDS = Path(__file__).resolve().parents[2] / "ablations" / "grids"
SWEEPS = ["kernel_size", "group_channels", "reduction_ratio", "kernel_generation", "operator", "depth"]


@pytest.mark.parametrize("scale", ["fashion_mnist", "imagenet"])
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_grid_exists_at_both_scales_and_expands(scale, sweep, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    g = grid.load_grid(GRIDS / scale / f"{sweep}.yaml")
    cells = grid.expand(g, [f"data.root={tmp_path}"] if scale == "imagenet" else [])
    assert len(cells) >= 3
    assert len({c.run_id for c in cells}) == len(cells)
    assert {c.config.data.dataset for c in cells} == {scale}


def test_operator_grid_compares_the_three_families_at_matched_depth():
    cells = grid.expand(grid.load_grid(GRIDS / "fashion_mnist" / "operator.yaml"))
    names = [c.config.model.name for c in cells]
    assert names == [f"{family}{depth}" for depth in (26, 38, 50) for family in ("rednet", "resnet", "sasa")]


def test_smoke_grid_ids_are_stable():
    g = grid.load_grid(GRIDS / "smoke.yaml")
    cells = grid.expand(g)
    assert len(cells) == 4 and {c.grid for c in cells} == {"smoke"}
    assert [c.run_id for c in cells] == [c.run_id for c in grid.expand(grid.load_grid(GRIDS / "smoke.yaml"))]
    assert cells[0].values == {"model.options.kernel_size": 3, "optim.lr_per_256": 0.2}


def test_run_ids_hash_only_what_changes_the_result(tmp_path):
    smoke = grid.load_grid(GRIDS / "smoke.yaml")
    ids = [c.run_id for c in grid.expand(smoke)]
    moved = ["data.root=/elsewhere", "data.num_workers=4", "train.threads=1"]
    assert [c.run_id for c in grid.expand(smoke, moved)] == ids
    detectron2 = {"source", "detectron2.OUTPUT_DIR", "detectron2.DATALOADER.NUM_WORKERS", "detectron2.MODEL.DEVICE"}
    assert set(records.NON_RESULT_KEYS) == {"data.root", "data.num_workers", "train.threads", *detectron2}
    for changed in ("train.seed=1", "optim.epochs=3", "data.train_subset=100", "train.channels_last=false"):
        assert not set(c.run_id for c in grid.expand(smoke, [changed])) & set(ids), changed


def test_bad_grids_name_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {GRIDS / 'smoke.yaml'}\naxis: {{}}\n")
    with pytest.raises(ConfigError, match="unknown grid key 'axis'"):
        grid.load_grid(path)
    path.write_text(
        f"base: {GRIDS.parent / 'configs' / 'synthetic.yaml'}\naxes: {{model.options.kernel_size: [3, 4]}}\n"
    )
    with pytest.raises(ConfigError, match=r"cell \{'model.options.kernel_size': 4\}: model: .*kernel_size must be odd"):
        grid.expand(grid.load_grid(path))


def test_cli_lists_cells(tmp_path, capsys):
    grid.main([str(GRIDS / "smoke.yaml"), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "smoke:" in out and "4 cells" in out and out.count("new") == 4


def two_grids_sharing_a_cell(tmp_path) -> tuple:
    """Grids "a" (kernel 3, 5) and "b" (kernel 3, 7) on a tiny synthetic set: the kernel-3 cell is shared."""
    tiny = {"optim.epochs": 1, "data.synthetic.train_size": 64, "data.synthetic.val_size": 32, "train.threads": 1}
    paths = []
    for name, kernels in (("a", [3, 5]), ("b", [3, 7])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "base": str(GRIDS.parent / "configs" / "synthetic.yaml"),
                    "set": tiny,
                    "axes": {"model.options.kernel_size": kernels},
                }
            )
        )
        paths.append(str(path))
    return paths


def grid_table(out_dir, name: str) -> set:
    """The run ids analysis lists under a grid."""
    runs = collect([out_dir]).runs
    return {run for run, grids in zip(runs.run_id, runs.grids) if name in grids.split(",")}


def test_second_grid_launched_later_lists_the_finished_shared_cell(tmp_path):
    a, b = two_grids_sharing_a_cell(tmp_path)
    out = tmp_path / "results"
    assert launch.main([a, "--out", str(out), "--executor", "debug"]) == 0
    assert launch.main([b, "--out", str(out), "--executor", "debug"]) == 0
    assert grid_table(out, "b") == {c.run_id for c in grid.expand(grid.load_grid(b))}
    assert grid_table(out, "a") == {c.run_id for c in grid.expand(grid.load_grid(a))}


def test_second_grid_launched_while_the_shared_cell_trains_lists_it(tmp_path):
    a, b = two_grids_sharing_a_cell(tmp_path)
    out = tmp_path / "results"
    shared = grid.expand(grid.load_grid(a))[0]
    # The first launch's job is training the shared cell: its record says running, it holds the run's lock.
    started = records.RunRecord(shared.run_id, records.RUNNING, to_dict(shared.config), {"a": shared.values})
    records.write_record(out, started)
    with records.claim(out, shared.run_id, "the first launch's job"):
        assert launch.main([b, "--out", str(out), "--executor", "debug"]) == 0
        assert records.read_record(out, shared.run_id).status == records.RUNNING  # not trained twice
        # The job rewrites its record from what it read before the second launch: b stays.
        records.write_record(out, dataclasses.replace(started, epochs=[{"epoch": 1}]))
    train.train(shared.config, out, progress=False)  # the job goes on and finishes the run
    assert records.read_record(out, shared.run_id).grids == {"a": shared.values, "b": shared.values}
    assert grid_table(out, "b") == {c.run_id for c in grid.expand(grid.load_grid(b))}


# The ids of the committed example records, one `make demo` run of the demo grids: a change of the id rule, or a
# new config key that enters ids at its default, would orphan every finished run of every results directory.
EXAMPLE = GRIDS.parents[1] / "results" / "example"
EXAMPLE_IDS = [
    "05a36daec3d1", "064d525b16e7", "11414ffdcd4c", "131ea774171e", "1ff9038dd9ef",
    "2c038e7817ac", "31d42efc66bc", "51cac5d7eb69", "678f6fa19fd7", "771e19c0da41",
    "8bd015b2bb50", "9f8cf6667231", "ab6bba7f1ade", "c9ab955e96d5", "ce6453888e5c",
]  # fmt: skip


def test_ids_of_finished_runs_stay_stable():
    # The Detectron2 runs of results/example: tests/detectron2_ext/test_detection_grids.py
    classification = [path for path in EXAMPLE.glob("*.json") if "kind" not in records.load_record(path).config]
    assert sorted(path.stem for path in classification) == EXAMPLE_IDS
    for path in classification:
        record = records.load_record(path)
        # Read back into today's schema: keys added since fill in with their defaults.
        assert records.run_id(to_dict(from_dict(RunConfig, record.config))) == record.run_id == path.stem
    demo = [
        c.run_id
        for name in ("operator", "kernel_size")
        for c in grid.expand(grid.load_grid(GRIDS / "demo" / f"{name}.yaml"))
    ]
    assert sorted(set(demo)) == EXAMPLE_IDS


def test_a_new_key_at_its_baseline_value_keeps_ids(monkeypatch):
    defaults = to_dict(RunConfig())
    for key, baseline in records.ID_BASELINE.items():
        section, leaf = key.split(".")
        assert defaults[section][leaf] == baseline, f"{key}: its default must reproduce the ids from before it"
    config = to_dict(grid.expand(grid.load_grid(GRIDS / "smoke.yaml"))[0].config)
    before = records.run_id(config)
    monkeypatch.setitem(records.ID_BASELINE, "optim.ema", False)
    assert records.run_id({**config, "optim": {**config["optim"], "ema": False}}) == before
    assert records.run_id({**config, "optim": {**config["optim"], "ema": True}}) != before


def image_folder(root: Path, classes: int, images: int) -> Path:
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for index in range(images):
                (folder / f"{index}.JPEG").write_bytes(b"")
    return root


def test_folder_datasets_are_identified_by_their_content_not_their_path(tmp_path):
    kernel = grid.load_grid(GRIDS / "imagenet" / "kernel_size.yaml")

    def ids(root):
        return [c.run_id for c in grid.expand(kernel, [f"data.root={root}"])]

    subset = ids(image_folder(tmp_path / "in100", classes=3, images=2))
    assert ids(image_folder(tmp_path / "moved" / "in100", classes=3, images=2)) == subset
    assert not set(ids(image_folder(tmp_path / "in1k", classes=4, images=2))) & set(subset)
    assert not set(ids(image_folder(tmp_path / "more", classes=3, images=3))) & set(subset)
    cell = grid.expand(kernel, [f"data.root={tmp_path / 'in100'}"])[0]
    assert (
        cell.config.data.fingerprint.startswith("3 classes ")
        and "6 train + 6 val images" in cell.config.data.fingerprint
    )
    with pytest.raises(ConfigError, match=r"data.fingerprint: .*in1k is '4 classes .*', not '3 classes"):
        grid.expand(kernel, [f"data.root={tmp_path / 'in1k'}", f"data.fingerprint={cell.config.data.fingerprint}"])
