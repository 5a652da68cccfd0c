"""The intervals of analysis.stats against values computed by hand (closed forms and printed t tables)."""

import math

import pytest

from analysis.stats import compare, paired_difference, t_cdf, t_quantile, welch_difference


@pytest.mark.parametrize(
    "dof, expected",
    [
        (1, math.tan(0.475 * math.pi)),  # Cauchy: t = tan(pi (p - 1/2))
        (2, 0.95 / math.sqrt(2 * 0.975 * 0.025)),  # t = (2p - 1) / sqrt(2 p (1 - p))
        (4, 2.776445),  # printed t tables, two-sided 95%
        (9, 2.262157),
        (30, 2.042272),
        (math.inf, 1.959964),
    ],
)
def test_t_quantile_at_97_5_percent(dof, expected):
    assert t_quantile(0.975, dof) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(0.025, dof) == pytest.approx(-expected, abs=2e-6)


def test_t_cdf_with_three_degrees_of_freedom_matches_its_closed_form():
    for t in (-4.0, -0.3, 0.0, 1.0, 3.182446):
        u = t / math.sqrt(3)
        closed = 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi
        assert t_cdf(t, 3) == pytest.approx(closed, abs=1e-12)
    assert t_quantile(0.975, 3) == pytest.approx(3.182446, abs=2e-6)


def test_t_quantile_between_whole_degrees_of_freedom_lies_between_their_quantiles():
    assert t_quantile(0.975, 5) < t_quantile(0.975, 4.5) < t_quantile(0.975, 4)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)


def test_paired_interval_by_hand():
    # differences 1.0, 1.5, 0.5: mean 1, sd 0.5, se 0.5/sqrt(3), t(0.975, 2) = 4.302653 -> 1 +- 1.242069
    a, b = {0: 85.0, 1: 86.0, 2: 84.5}, {0: 84.0, 1: 84.5, 2: 84.0}
    diff = compare(a, b)
    assert diff.paired and diff.seeds == 3 and diff.dof == 2
    assert diff.mean == pytest.approx(1.0)
    assert (diff.low, diff.high) == (pytest.approx(-0.242069, abs=1e-5), pytest.approx(2.242069, abs=1e-5))
    assert not diff.called
    # the same spread around a mean of 2: the interval [0.757931, 3.242069] excludes 0
    shifted = compare({s: v + 1 for s, v in a.items()}, b)
    assert shifted.low == pytest.approx(0.757931, abs=1e-5) and shifted.called
    assert compare(b, {s: v + 1 for s, v in a.items()}).called  # B lower: called as well


def test_pairing_removes_the_seed_effect_the_unpaired_interval_keeps():
    # every seed moves both cells alike: paired differences are all 0.4 (no spread), unpaired ones are not
    a, b = {0: 80.4, 1: 85.4, 2: 90.4}, {0: 80.0, 1: 85.0, 2: 90.0}
    assert compare(a, b).called
    assert not welch_difference(list(a.values()), list(b.values())).called


def test_welch_interval_by_hand_when_the_seeds_do_not_pair():
    # a: mean 2, var 1 (n 3); b: mean 5, var 20/3 (n 4); se^2 = 1/3 + 5/3 = 2;
    # dof = 4 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27) = 216 / 53
    diff = compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 4.0, 2: 6.0, 3: 8.0})
    assert not diff.paired and diff.seeds == 3
    assert diff.mean == pytest.approx(-3.0) and diff.dof == pytest.approx(216 / 53)
    half = (diff.high - diff.low) / 2
    assert half == pytest.approx(t_quantile(0.975, 216 / 53) * math.sqrt(2))
    assert 2.570582 * math.sqrt(2) < half < 2.776445 * math.sqrt(2)  # between t(0.975, 5) and t(0.975, 4)
    assert not diff.called


def test_one_seed_gives_no_interval_and_calls_nothing():
    for diff in (compare({0: 90.0}, {0: 80.0}), paired_difference([10.0]), welch_difference([90.0], [80.0, 81.0])):
        assert diff.low is None and diff.high is None and not diff.called
