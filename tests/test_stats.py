"""Statistics against known values (textbook Wilson bounds, exact binomial McNemar, t intervals)."""

import math

import numpy as np
import pytest

from realgap.evaluation import stats


@pytest.mark.parametrize(
    "k,n,low,high",
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (81, 263, 0.2553, 0.3662)],
)
def test_wilson_known_values(k, n, low, high):
    iv = stats.wilson(k, n)
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(low, abs=1e-4)
    assert iv.high == pytest.approx(high, abs=1e-4)


def test_wilson_empty_and_invalid():
    assert math.isnan(stats.wilson(0, 0).estimate)
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_mcnemar_exact_known_values():
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_bootstrap_is_seeded_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    base = rng.random(60) < 0.8
    other = base & (rng.random(60) < 0.7)
    a = stats.paired_bootstrap_diff(base, other, seed=3)
    b = stats.paired_bootstrap_diff(base, other, seed=3)
    c = stats.paired_bootstrap_diff(base, other, seed=4)
    assert a == b and c.estimate == a.estimate
    assert a.estimate == pytest.approx(other.mean() - base.mean())
    assert a.low < a.estimate < a.high
    assert a.estimate < 0 and a.high - a.low < 0.5
    # identical arms: no difference, degenerate interval
    same = stats.paired_bootstrap_diff(base, base, seed=0)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_mean_ci_known_value():
    iv = stats.mean_ci(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert iv.estimate == 2.0
    assert iv.low == pytest.approx(2.0 - half) and iv.high == pytest.approx(2.0 + half)
    assert math.isnan(stats.mean_ci(np.array([5.0])).low)


def test_compare_paired_counts_discordant_seeds_only_on_shared_seeds():
    base = {1: True, 2: True, 3: False, 4: True, 5: False}
    other = {1: True, 2: False, 3: True, 4: False, 6: True}  # seed 5/6 not shared
    cmp = stats.compare_paired(base, other, seed=0, n_boot=2000)
    assert cmp.n_pairs == 4
    assert (cmp.only_base, cmp.only_other) == (2, 1)
    assert cmp.difference.estimate == pytest.approx(-1 / 4)
    assert cmp.p_value == pytest.approx(stats.mcnemar_exact(2, 1))


def test_wilson_brackets_its_estimate_for_every_k_of_n_up_to_500():
    # rounding once put 30/30's high bound (0.9999999999999999) below the estimate, which crashed the plot
    for n in range(1, 501):
        for k in range(n + 1):
            iv = stats.wilson(k, n)
            assert 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0, (k, n, iv)
        assert stats.wilson(0, n).low == 0.0 and stats.wilson(n, n).high == 1.0
