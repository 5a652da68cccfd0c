"""Is cell A better than cell B? The difference of their mean top-1 with a 95% Student-t interval.

Runs of two cells with the same seed share their training subset, data order and augmentation, so the
difference is paired by seed (t with n_pairs - 1 degrees of freedom) when both cells have the same seeds;
otherwise the two cells are compared unpaired (Welch's interval, Welch-Satterthwaite degrees of freedom). A
difference is called only when its interval excludes 0. The t quantile is computed here (regularised incomplete
beta function), so the analysis needs no scipy.
"""

import math
from dataclasses import dataclass
from typing import Mapping, Optional

LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """mean(A) - mean(B) in points, with its interval; low/high are None when there are too few seeds."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    dof: Optional[float]
    paired: bool
    seeds: int  # pairs when paired, else the smaller cell's number of seeds

    @property
    def called(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


def compare(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Difference:
    """A's minus B's top-1, each given as {seed: top-1}: paired by seed when both have the same >= 2 seeds."""
    if set(a) == set(b) and len(a) >= 2:
        return paired_difference([a[s] - b[s] for s in sorted(a)], level)
    return welch_difference(list(a.values()), list(b.values()), level)


def paired_difference(differences, level: float = LEVEL) -> Difference:
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return Difference(mean, None, None, None, True, n)
    half = t_quantile((1 + level) / 2, n - 1) * math.sqrt(_variance(differences) / n)
    return Difference(mean, mean - half, mean + half, n - 1, True, n)


def welch_difference(a, b, level: float = LEVEL) -> Difference:
    mean = sum(a) / len(a) - sum(b) / len(b)
    if min(len(a), len(b)) < 2:
        return Difference(mean, None, None, None, False, min(len(a), len(b)))
    va, vb = _variance(a) / len(a), _variance(b) / len(b)
    if va + vb == 0:  # no spread at all: the difference is exact
        return Difference(mean, mean, mean, math.inf, False, min(len(a), len(b)))
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile((1 + level) / 2, dof) * math.sqrt(va + vb)
    return Difference(mean, mean - half, mean + half, dof, False, min(len(a), len(b)))


def _variance(values) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` (> 0, not necessarily whole) degrees of freedom."""
    if dof <= 0:
        raise ValueError(f"t distribution: degrees of freedom must be positive, got {dof}")
    if math.isinf(dof):
        return 0.5 * math.erfc(-t / math.sqrt(2))
    tail = 0.5 * _incomplete_beta(dof / 2, 0.5, dof / (dof + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, dof: float) -> float:
    """The t with t_cdf(t, dof) = p, by bisection (to about 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"t quantile: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < p:
        low, high = high, 2 * high
    while high - low > 1e-12 * max(1.0, high):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, dof) < p else (low, middle)
    return (low + high) / 2


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1 - _incomplete_beta(b, a, 1 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) * fraction / a
