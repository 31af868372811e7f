"""Statistics for rollout suites — the one home for intervals and paired tests.

Every condition runs on the SAME episode seeds as nominal, so comparisons are paired:
McNemar's exact test on the discordant seeds and a paired bootstrap of the success difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from realgap import seeding

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval for a binomial proportion (well behaved at 0/n and n/n)."""
    if n <= 0:
        return Interval(math.nan, math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, {n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clamp: rounding can put a bound a hair past the estimate (30/30 gave high = 0.9999999999999999)
    return Interval(p, min(p, max(0.0, center - half)), max(p, min(1.0, center + half)))


def mcnemar_exact(only_base: int, only_other: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``only_base``: seeds that succeed in the base condition only; ``only_other``: in the other only.
    """
    n = only_base + only_other
    if n == 0:
        return 1.0
    return float(sps.binomtest(only_other, n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_diff(
    base: np.ndarray, other: np.ndarray, seed: int = 0, n_boot: int = 10_000, level: float = 0.95
) -> Interval:
    """Mean of (other - base) over paired seeds, with a percentile bootstrap CI resampling seeds."""
    base = np.asarray(base, dtype=float)
    other = np.asarray(other, dtype=float)
    if base.shape != other.shape or base.ndim != 1:
        raise ValueError(f"paired arrays must be 1-D and equal length, got {base.shape} and {other.shape}")
    n = base.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    diffs = other - base
    rng = seeding.stream(seed, "stats.paired_bootstrap")
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = diffs[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(float(diffs.mean()), float(low), float(high))


def mean_ci(values: np.ndarray, level: float = 0.95) -> Interval:
    """Mean with a Student-t confidence interval (NaN bounds when fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if values.size < 2:
        return Interval(mean, math.nan, math.nan)
    sem = float(values.std(ddof=1) / math.sqrt(values.size))
    half = float(sps.t.ppf(0.5 + level / 2.0, values.size - 1)) * sem
    return Interval(mean, mean - half, mean + half)


@dataclass(frozen=True)
class PairedComparison:
    n_pairs: int
    only_base: int  # seeds that succeed in the base condition only
    only_other: int  # seeds that succeed in the compared condition only
    difference: Interval  # success(other) - success(base), paired bootstrap CI
    p_value: float  # exact McNemar

    def as_dict(self) -> dict:
        return {
            "n_pairs": self.n_pairs,
            "only_base": self.only_base,
            "only_other": self.only_other,
            "difference": self.difference.as_dict(),
            "p_value": self.p_value,
        }


def compare_paired(
    base: dict[int, bool], other: dict[int, bool], seed: int = 0, n_boot: int = 10_000
) -> PairedComparison:
    """Compare two conditions' successes on the seeds they share (``{episode_seed: success}``)."""
    shared = sorted(set(base) & set(other))
    b = np.array([bool(base[s]) for s in shared], dtype=bool)
    o = np.array([bool(other[s]) for s in shared], dtype=bool)
    only_base = int(np.sum(b & ~o))
    only_other = int(np.sum(~b & o))
    diff = paired_bootstrap_diff(b.astype(float), o.astype(float), seed=seed, n_boot=n_boot)
    return PairedComparison(len(shared), only_base, only_other, diff, mcnemar_exact(only_base, only_other))
