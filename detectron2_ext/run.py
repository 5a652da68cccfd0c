"""A Detectron2 run of a detection grid: its resolved config, and training it into the run store.

``resolve`` turns a grid cell (config file + KEY -> value overrides) into the run's config, checked as train_net
checks one; ``train`` trains and evaluates it with train_net's trainer, in this process, into
DIR/<run_id>/detectron2/ (Detectron2's checkpoints, metrics.json, evaluation files), and writes the run record
DIR/<run_id>.json (box AP, mask AP or mIoU; params, FLOPs, images/s, wall time) under the run's lock. A run
whose job was preempted resumes from its last Detectron2 checkpoint.
"""

import math
import os
import platform
import statistics
import time
import traceback
from pathlib import Path
from typing import Optional

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.utils.env import seed_all_rng

from ablations import records
from ablations.config import ConfigError, to_dict
from ablations.detection import METRICS, DetectionConfig, model_name
from ablations.train import git_commit, hardware, peak_memory_mib

from . import checks, complexity
from .config import add_involution_config, load_config
from .train_net import Trainer, register_generated_if_named

REPOSITORY = Path(__file__).resolve().parents[1]
# FLOPs of own runs: at the published input size on the published datasets, else at MIN_SIZE_TEST squared.
PUBLISHED_SIZES = {"coco": complexity.DETECTION_SIZE, "cityscapes": complexity.SEGMENTATION_SIZE}


def resolve(config_file, opts: dict) -> DetectionConfig:
    """The run config of a config file with ``opts`` (KEY -> value, a string being read as a Python literal),
    after train_net's checks; ConfigError names the first problem."""
    cfg = load_config(config_file, [item for key, value in opts.items() for item in (key, value)])
    if cfg.SEED < 0:
        raise ConfigError(f"SEED is {cfg.SEED} (a random seed): a grid's runs need a fixed SEED, e.g. an axis SEED")
    register_generated_if_named(cfg)
    checks.check(cfg)
    path = Path(config_file).resolve()
    source = str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)
    return DetectionConfig({"config_file": source, "opts": dict(opts)}, yaml.safe_load(cfg.dump()))


def build_cfg(config: DetectionConfig, output_dir: Path) -> CfgNode:
    """The Detectron2 config the record holds, writing into output_dir."""
    cfg = get_cfg()
    add_involution_config(cfg)
    cfg.merge_from_other_cfg(CfgNode(config.detectron2))
    cfg.OUTPUT_DIR = str(output_dir)
    register_generated_if_named(cfg)
    cfg.freeze()
    return cfg


def flops_size(cfg) -> tuple[int, int]:
    dataset = cfg.DATASETS.TEST[0]
    for prefix, size in PUBLISHED_SIZES.items():
        if dataset.startswith(prefix):
            return size
    return cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST


def measure(model: torch.nn.Module, cfg) -> dict:
    """Trainable parameters and paper-convention FLOPs (detectron2_ext.complexity) of the trained model."""
    size = flops_size(cfg)
    with torch.no_grad():
        flops = complexity.flops(model, size)
    heads = ""
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        heads = f", box head on {complexity.BOX_ROIS} RoIs"
        heads += f", mask head on {complexity.MASK_ROIS}" if cfg.MODEL.MASK_ON else ""
    return {
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": flops,
        "flops_convention": f"paper (multiply-adds), 3x{size[0]}x{size[1]}{heads}",
    }


def metrics(histories: dict) -> dict:
    """The record's metric fields from the last evaluation, which Detectron2's EvalHook puts into the trainer's
    event storage as "task/metric" (e.g. "bbox/AP"); None for a metric it has no value for (NaN: no such
    objects in the test set)."""
    found = {}
    for field, (task, name) in METRICS.items():
        history = histories.get(f"{task}/{name}")
        value = history.latest() if history else None
        found[field] = float(value) if value is not None and math.isfinite(value) else None
    return found


def train(config: DetectionConfig, out_dir, job_id: Optional[str] = None) -> records.RunRecord:
    """Train and evaluate one run (or return its finished record); RunBusy if another process trains it."""
    run = records.run_id(to_dict(config))
    existing = records.read_record(out_dir, run)
    if existing and existing.status == records.FINISHED:
        return existing
    holder = f"host {platform.node()}, pid {os.getpid()}" + (f", job {job_id}" if job_id else "")
    with records.claim(out_dir, run, holder):
        existing = records.read_record(out_dir, run)
        if existing and existing.status == records.FINISHED:
            return existing
        cfg = build_cfg(config, records.checkpoint_dir(out_dir, run) / "detectron2")
        record = records.RunRecord(
            run,
            records.RUNNING,
            to_dict(config),
            job_id=job_id,
            model=model_name(config.detectron2),
            git_commit=git_commit(),
            hardware=hardware(torch.device(cfg.MODEL.DEVICE), 1),
        )
        records.write_record(out_dir, record)
        try:
            seed_all_rng(cfg.SEED)
            start = time.perf_counter()
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=True)  # continues from OUTPUT_DIR's last checkpoint after a requeue
            trainer.train()
            record.wall_time_s = time.perf_counter() - start
            histories = trainer.storage.histories()
            if "time" in histories:  # seconds per training step, written by Detectron2's IterationTimer
                step = statistics.median(value for value, _ in histories["time"].values())
                record.images_per_s = cfg.SOLVER.IMS_PER_BATCH / step
            record.train_loss = histories["total_loss"].latest() if "total_loss" in histories else None
            record.iterations = trainer.iter
            record.peak_memory_mib = peak_memory_mib(torch.device(cfg.MODEL.DEVICE))
            for key, value in {**metrics(histories), **measure(trainer.model, cfg)}.items():
                setattr(record, key, value)
        except Exception:
            record.status, record.error = records.FAILED, traceback.format_exc(limit=20)
            records.write_record(out_dir, record)
            raise
        record.status = records.FINISHED
        records.write_record(out_dir, record)
        return record
