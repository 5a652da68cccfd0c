"""The two parts of the paper's recipes that Detectron2 lacks: the poly learning-rate schedule (SOLVER.
LR_SCHEDULER_NAME "WarmupPolyLR") and gradient clipping by the whole model's norm (SOLVER.CLIP_GRADIENTS.
CLIP_TYPE "full_model"), on Detectron2's and fvcore's own classes."""

import detectron2.solver
import torch
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ParamScheduler


class PolyParamScheduler(ParamScheduler):
    """Multiplier of the base rate at progress ``where`` in [0, 1): end + (1 - end) * (1 - where) ** power."""

    def __init__(self, power: float, end: float):
        self.power, self.end = power, end

    def __call__(self, where: float) -> float:
        return self.end + (1 - self.end) * (1 - where) ** self.power


def build_poly_lr_scheduler(cfg, optimizer) -> LRMultiplier:
    solver = cfg.SOLVER
    poly = PolyParamScheduler(solver.POLY_LR_POWER, solver.POLY_LR_MIN / solver.BASE_LR)
    warmup = WarmupParamScheduler(
        poly, solver.WARMUP_FACTOR, min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0), solver.WARMUP_METHOD
    )
    return LRMultiplier(optimizer, multiplier=warmup, max_iter=solver.MAX_ITER)


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """Detectron2's optimizer; with SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model", gradients are clipped by the
    norm of all of them together (mmcv's grad_clip, the paper's recipe) rather than per parameter."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        return detectron2.solver.build_optimizer(cfg, model)
    unclipped = cfg.clone()
    unclipped.defrost()
    unclipped.SOLVER.CLIP_GRADIENTS.ENABLED = False
    optimizer = detectron2.solver.build_optimizer(unclipped, model)
    max_norm, norm_type = clip.CLIP_VALUE, clip.NORM_TYPE

    class FullModelGradientClipping(type(optimizer)):
        def step(self, closure=None):
            parameters = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)
            return super().step(closure)

    optimizer.__class__ = FullModelGradientClipping
    return optimizer
