#!/usr/bin/env python
"""Train and evaluate the detectors and segmenters of detectron2_ext with Detectron2's default trainer.

    python detectron2_ext/train_net.py --config-file detectron2_ext/configs/fashion_coco/mask_rcnn_red50_fpn.yaml
    python detectron2_ext/train_net.py --config-file CONFIG --num-gpus 8 MODEL.REDNET.PRETRAINED rednet50.pth
    python detectron2_ext/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS out/model_final.pth
    python detectron2_ext/train_net.py --config-file CONFIG --dataset-dir /data/my_coco \\
        DATASETS.TRAIN '("my_coco_train",)' DATASETS.TEST '("my_coco_val",)' MODEL.ROI_HEADS.NUM_CLASSES 3

The generated fashion_coco set is generated and registered when a config names it; --dataset-dir registers a
COCO-format folder (see detectron2_ext.datasets). --resume continues from OUTPUT_DIR's last checkpoint.
Processes on one machine meet at a free port of it; several machines need --dist-url tcp://<first machine>:PORT.
"""

import os
from functools import partial

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator

from ablations import cli
from ablations.config import ConfigError
from detectron2_ext import checks, datasets
from detectron2_ext.augmentation import build_train_mapper
from detectron2_ext.config import load_config
from detectron2_ext.solver import build_optimizer, build_poly_lr_scheduler


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type in (
            "sem_seg",
            "cityscapes_sem_seg",
        ):  # mIoU over the label maps, through pycocotools-free code
            return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
        raise ValueError(f"no evaluator for dataset {dataset_name} (evaluator_type {evaluator_type!r})")

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
            return build_poly_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)


def get_args_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--dataset-dir",
        action="append",
        default=[],
        help="a COCO-format folder (annotations/instances_<split>.json, images in <split>/) to register as "
        "<folder name>_<split>; may be repeated",
    )
    parser.set_defaults(dist_url="auto")  # a free port: two jobs on one machine must not meet at the same one
    return parser


def setup(args):
    """The config (file + KEY VALUE overrides) with the datasets it names registered."""
    cfg = load_config(args.config_file, args.opts)
    datasets.register_coco_folders(args.dataset_dir)
    register_generated_if_named(cfg)
    cfg.freeze()
    return cfg


def register_generated_if_named(cfg) -> None:
    """Generate (once) and register the fashion_coco set when the config trains or tests on it."""
    if any(name.startswith(datasets.GENERATED_NAME + "_") for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST):
        datasets.register_generated()


def main(args):
    cfg = setup(args)
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def prepare(args):
    """The config, after everything that can be checked before a training process starts: config keys and
    values, datasets and their classes, the backbone and its checkpoint, how the processes meet."""
    cfg = setup(args)
    checks.check(cfg, args.eval_only)
    if args.num_machines > 1 and args.dist_url == "auto":
        raise ConfigError("--dist-url: processes on several machines meet at tcp://<first machine's address>:PORT")
    return cfg


def invoke(args) -> None:
    """Check everything here, then train or evaluate in ``args.num_gpus`` processes per machine."""
    prepare(args)
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))


if __name__ == "__main__":
    cli.run(partial(invoke, get_args_parser().parse_args()), "train_net")
