"""The poly learning-rate schedule of the paper's segmentation recipe (SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR"),
on Detectron2's and fvcore's scheduler classes."""

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
