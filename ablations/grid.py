"""Grids: a base run config plus the axes to sweep, expanded into runs with stable ids.

A grid file (YAML)::

    description: Kernel size, Fashion-MNIST scale.
    base: ../../configs/fashion_mnist.yaml   # a run config, relative to this file
    set: {optim.epochs: 3}                   # overrides for every cell (optional)
    axes:                                    # the cartesian product of the axes, in file order
      model.options.kernel_size: [3, 5, 7, 9]

An axis value that is a mapping replaces the whole section it names (e.g. an axis ``model`` whose
values are ``{name: resnet26, options: {...}}``), for sweeps over models that take different options.
Every cell is validated when the grid is expanded, before anything runs.

A detection grid (``kind: detectron2``) has a Detectron2 config as its base, Detectron2 keys in ``set``, its axes
and the ``KEY=value`` overrides, and may sweep the base config itself (the detector and its neck/head variant)::

    kind: detectron2
    base: ../../../detectron2_ext/configs/fashion_coco/mask_rcnn_red50_fpn.yaml
    set: {SOLVER.MAX_ITER: 100}
    axes:
      MODEL.REDNET.NAME: [rednet50, resnet50]
      SEED: [0, 1]

Each cell is resolved and checked as train_net checks a config (datasets, classes, backbone, checkpoint) in the
launching process, so a bad cell fails before any job is queued.

    python -m ablations.grid GRID.yaml [--out DIR] [key=value ...]   # list the cells, ids and status
"""

import argparse
import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from . import cli, detection, records
from .config import ConfigError, RunConfig, apply_override, from_dict, set_key, to_dict, validate

GRID_KEYS = ("description", "kind", "base", "set", "axes")
KINDS = (detection.CLASSIFICATION, detection.KIND)


@dataclass
class Grid:
    name: str
    path: Path
    description: str
    base: dict  # the base run config (classification grids)
    settings: dict
    axes: dict
    kind: str = detection.CLASSIFICATION
    base_file: Optional[Path] = None


@dataclass
class Cell:
    run_id: str
    grid: str  # the grid's name (its file name)
    values: dict  # axis -> value of this cell
    config: Union[RunConfig, detection.DetectionConfig]


def load_grid(path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown grid key '{unknown[0]}' (known: {', '.join(GRID_KEYS)})")
    if "base" not in spec:
        raise ConfigError(f"{path}: no 'base' run config")
    base_path = (path.parent / spec["base"]).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    axes = spec.get("axes") or {}
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: axis '{axis}' must be a non-empty list")
    kind = spec.get("kind", detection.CLASSIFICATION)
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind '{kind}' (known: {', '.join(KINDS)})")
    if kind == detection.CLASSIFICATION and "base" in axes:
        raise ConfigError(f"{path}: only a detection grid (kind: {detection.KIND}) sweeps its base config")
    base = (yaml.safe_load(base_path.read_text()) or {}) if kind == detection.CLASSIFICATION else {}
    return Grid(path.stem, path, spec.get("description", ""), base, spec.get("set") or {}, axes, kind, base_path)


def expand(grid: Grid, overrides=()) -> list[Cell]:
    """Every cell of the grid, validated, with its run id; ``overrides`` (``key=value``, e.g. the user's
    ``data.root=...``) apply to every cell, after the axes."""
    if grid.kind == detection.KIND:
        return _expand_detection(grid, overrides)
    cells = []
    for combination in itertools.product(*grid.axes.values()):
        values = dict(zip(grid.axes, combination))
        data = copy.deepcopy(grid.base)
        for key, value in {**grid.settings, **values}.items():
            set_key(data, key, copy.deepcopy(value))
        for assignment in overrides:
            apply_override(data, assignment)
        try:
            config = from_dict(RunConfig, data)
            validate(config)
        except ConfigError as error:
            raise ConfigError(f"{grid.path}: cell {values}: {error}") from error
        cells.append(Cell(records.run_id(to_dict(config)), grid.name, values, config))
    return cells


def _expand_detection(grid: Grid, overrides=()) -> list[Cell]:
    from detectron2_ext.run import resolve  # Detectron2 is imported for detection grids only

    assigned = {}
    for assignment in overrides:
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            raise ConfigError(f"override '{assignment}': expected KEY=value")
        assigned[key] = value  # a string: Detectron2 reads it as a Python literal
    cells = []
    for combination in itertools.product(*grid.axes.values()):
        values = dict(zip(grid.axes, combination))
        config_file = grid.base_file
        if "base" in values:
            config_file = (grid.path.parent / values["base"]).resolve()
        opts = {**grid.settings, **{k: v for k, v in values.items() if k != "base"}, **assigned}
        try:
            config = resolve(config_file, opts)
        except ConfigError as error:
            raise ConfigError(f"{grid.path}: cell {values}: {error}") from error
        cells.append(Cell(records.run_id(to_dict(config)), grid.name, values, config))
    return cells


def status(cell: Cell, out_dir) -> str:
    """What the cell's record says ("new" without one); slurm.status also asks the jobs."""
    record = records.read_record(out_dir, cell.run_id)
    return record.status if record else "new"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="List a grid's cells, their run ids and their status.")
    parser.add_argument("grid")
    parser.add_argument("overrides", nargs="*", help="key=value for every cell, e.g. data.root=/data/imagenet")
    parser.add_argument("--out", help="results directory (default: results/<grid name>)")
    args = parser.parse_intermixed_args(argv)
    grid = load_grid(args.grid)
    out_dir = Path(args.out or Path("results") / grid.name)
    cells = expand(grid, args.overrides)
    print(f"{grid.name}: {grid.description.strip()} {len(cells)} cells, results in {out_dir}")
    for cell in cells:
        print(f"  {cell.run_id}  {status(cell, out_dir):<9} {cell.values}")


if __name__ == "__main__":
    cli.run(main, "ablations.grid")
