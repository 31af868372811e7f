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


# ============================================================================ ablation statistics
# (``realgap ablate``; evaluation/ablation.py is their consumer.) Outcome arrays are 0/1 success.


@dataclass(frozen=True)
class AblationEffect:
    """effect = success(a) - success(b), paired over training seeds and episode seeds."""

    estimate: float
    ci95: Interval
    ci90: Interval  # the TOST interval (two one-sided 5% tests)
    n_train_seeds: int
    n_episodes: int

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "ci95": self.ci95.as_dict(), "ci90": self.ci90.as_dict(),
                "n_train_seeds": self.n_train_seeds, "n_episodes": self.n_episodes}


def _resample_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) weights of a with-replacement resample of n units (counts / n)."""
    idx = rng.integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.arange(n_boot)[:, None], idx), 1.0)
    return weights / n


def cluster_bootstrap_samples(diff: np.ndarray, seed: int = 0, n_boot: int = 10_000) -> np.ndarray:
    """Two-level bootstrap of the mean of ``diff`` (training seeds x episode seeds).

    Each replicate resamples training seeds (rows) and episode seeds (columns) with replacement. Both
    arms share their training seed (same init and batch streams) and their episode seeds, so pairs
    are kept intact: identical arms give every replicate exactly 0.
    """
    diff = np.asarray(diff, dtype=float)
    if diff.ndim != 2 or diff.shape[0] < 1 or diff.shape[1] < 1:
        raise ValueError(f"diff must be (train seeds, episodes) with both >= 1, got {diff.shape}")
    rng = seeding.stream(seed, "stats.cluster_bootstrap")
    rows = _resample_weights(rng, diff.shape[0], n_boot)
    cols = _resample_weights(rng, diff.shape[1], n_boot)
    return np.einsum("bs,se,be->b", rows, diff, cols)


def hierarchical_paired_effect(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 10_000) -> AblationEffect:
    """Effect success(a) - success(b) with 95% and 90% percentile CIs from the two-level bootstrap.

    ``a``, ``b``: (training seeds, episode seeds) outcomes; row i of both arms used training seed i,
    column j episode seed j.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"arms must be equal-shaped (train seeds, episodes) arrays, got {a.shape} and {b.shape}")
    diff = a - b
    boot = cluster_bootstrap_samples(diff, seed=seed, n_boot=n_boot)
    q = np.quantile(boot, [0.025, 0.975, 0.05, 0.95])
    est = float(diff.mean())
    return AblationEffect(est, Interval(est, float(q[0]), float(q[1])), Interval(est, float(q[2]), float(q[3])),
                          diff.shape[0], diff.shape[1])


VERDICTS = ("helpful", "placebo", "harmful", "undecided")


def tost_verdict(ci90: Interval, ci95: Interval, margin: float = 0.05) -> str:
    """placebo: the 90% CI lies inside (-margin, +margin) (TOST at 5% per side), even if it excludes 0
    (an effect shown to be smaller than the margin is practically nil); else helpful when the 95% CI
    is above 0, harmful when below, undecided otherwise."""
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if -margin < ci90.low and ci90.high < margin:
        return "placebo"
    if ci95.low > 0:
        return "helpful"
    if ci95.high < 0:
        return "harmful"
    return "undecided"


def pearson_simpler(sim, real) -> float:
    """Pearson r as SIMPLER computes it: centred vectors, sum(x*y) / (sqrt(sum x^2 * sum y^2) + 1e-8),
    and 1 when the centred vectors are equal."""
    x = np.asarray(sim, dtype=float) - np.mean(sim)
    y = np.asarray(real, dtype=float) - np.mean(real)
    if x.shape != y.shape:
        raise ValueError(f"sim and real differ in shape: {x.shape} vs {y.shape}")
    if np.all(x == y):
        return 1.0
    return float(np.sum(x * y) / (np.sqrt(np.sum(x**2) * np.sum(y**2)) + 1e-8))


def mmrv(*, sim, real) -> float:
    """SIMPLER's Mean Maximum Rank Violation: for each policy i, the largest |real_i - real_j| over the
    policies j whose sim order disagrees with their real order (strict >), averaged over i.
    Keyword-only: swapping the arguments would weight violations by sim gaps."""
    s, r = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if s.shape != r.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"sim and real must be equal-length 1-D, got {s.shape} and {r.shape}")
    violated = (s[:, None] > s[None, :]) != (r[:, None] > r[None, :])
    gaps = np.where(violated, np.abs(r[:, None] - r[None, :]), 0.0)
    return float(gaps.max(axis=1).mean())


def sim_real_agreement(sim_outcomes, real_outcomes, seed: int = 0, n_boot: int = 2000) -> dict[str, Interval]:
    """Pearson r and MMRV between per-policy sim and target success, each with a 95% percentile CI
    from a bootstrap that resamples every policy's episodes (sim and target independently)."""
    sims = [np.asarray(x, dtype=float) for x in sim_outcomes]
    reals = [np.asarray(x, dtype=float) for x in real_outcomes]
    if len(sims) != len(reals) or len(sims) < 2 or any(x.size == 0 for x in sims + reals):
        raise ValueError("need >= 2 policies, each with >= 1 sim and >= 1 target episode")
    rng = seeding.stream(seed, "stats.sim_real_agreement")
    sim_boot = np.stack([x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1) for x in sims], axis=1)
    real_boot = np.stack([x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1) for x in reals], axis=1)
    out = {}
    for name, fn in (("pearson", lambda s, r: pearson_simpler(s, r)), ("mmrv", lambda s, r: mmrv(sim=s, real=r))):
        point = fn([x.mean() for x in sims], [x.mean() for x in reals])
        boot = np.array([fn(sim_boot[i], real_boot[i]) for i in range(n_boot)])
        low, high = np.quantile(boot, [0.025, 0.975])
        out[name] = Interval(float(point), float(low), float(high))
    return out


import functools  # noqa: E402  (this block's own import, kept with it)

# --- sequential comparison: group-sequential repeated confidence intervals, O'Brien-Fleming spending
def obf_spending(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction t (two-sided)."""
    if t <= 0:
        return 0.0
    return float(2.0 - 2.0 * sps.norm.cdf(sps.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(min(t, 1.0))))


def group_sequential_bounds(fractions, alpha: float = 0.05, grid: int = 801) -> np.ndarray:
    """Two-sided critical z values c_k at information fractions t_1 < ... < t_K = 1 such that a
    standard Brownian score first leaves (-c_k sqrt(t_k), c_k sqrt(t_k)) at look k with probability
    obf_spending(t_k) - obf_spending(t_{k-1}) (numerical integration over the continuation region)."""
    from scipy.optimize import brentq

    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or abs(t[-1] - 1.0) > 1e-9:
        raise ValueError(f"fractions must increase strictly in (0, 1] and end at 1, got {fractions}")
    bounds = [float(sps.norm.ppf(1.0 - obf_spending(t[0], alpha) / 2.0))]
    x = np.linspace(-bounds[0] * math.sqrt(t[0]), bounds[0] * math.sqrt(t[0]), grid)
    f = sps.norm.pdf(x / math.sqrt(t[0])) / math.sqrt(t[0])  # density of the score at look 1, kept paths
    for k in range(1, t.size):
        sd = math.sqrt(t[k] - t[k - 1])
        spend = obf_spending(t[k], alpha) - obf_spending(t[k - 1], alpha)

        def cross(c: float) -> float:
            edge = c * math.sqrt(t[k])
            p_out = sps.norm.cdf((-edge - x) / sd) + sps.norm.sf((edge - x) / sd)
            return float(np.trapezoid(f * p_out, x)) - spend

        c = brentq(cross, 0.0, 40.0) if spend > 0 else 40.0
        bounds.append(float(c))
        new_x = np.linspace(-c * math.sqrt(t[k]), c * math.sqrt(t[k]), grid)
        f = np.trapezoid(f[None, :] * sps.norm.pdf((new_x[:, None] - x[None, :]) / sd) / sd, x, axis=1)
        x = new_x
    return np.array(bounds)


@functools.lru_cache(maxsize=64)
def _cached_bounds(fractions: tuple, alpha: float) -> np.ndarray:
    return group_sequential_bounds(fractions, alpha)


@dataclass(frozen=True)
class SequentialResult:
    decision: str  # better / worse / equivalent / undecided
    n_used: int  # pairs used when it stopped
    n_max: int
    look: int  # 1-based look at which it stopped (K when it ran out)
    estimate: float

    def as_dict(self) -> dict:
        return {"decision": self.decision, "n_used": self.n_used, "n_max": self.n_max, "look": self.look,
                "estimate": self.estimate}


def _decide(mean: float, se: float, c_diff: float, c_equiv: float, margin: float, n: int) -> str | None:
    cc = 1.0 / n  # continuity correction: one discordant pair (the normal approximation alone ran ~0.054 at 0.05)
    if mean - cc - c_diff * se > 0:
        return "better"
    if mean + cc + c_diff * se < 0:
        return "worse"
    if -margin < mean - cc - c_equiv * se and mean + cc + c_equiv * se < margin:
        return "equivalent"
    return None


def _paired_se(d: np.ndarray) -> float:
    """SE of the mean paired difference with half a pseudo-pair each way (d = +1 and d = -1) in the
    variance only, so an all-concordant start never gives a zero-width interval."""
    n = d.size
    if n == 0:
        return math.inf
    m = float(d.mean())
    ss = float(np.sum((d - m) ** 2)) + 0.5 * (1 - m) ** 2 + 0.5 * (1 + m) ** 2  # n + 1 values, n df
    return math.sqrt(ss / n / n)


def sequential_paired_test(diffs, looks, margin: float = 0.05, alpha: float = 0.05) -> SequentialResult:
    """Group-sequential test of paired differences ``diffs`` (in evaluation order, values in [-1, 1]).

    At each look n_k (``looks``, increasing, last = len(diffs)) it forms repeated confidence intervals
    mean +- c_k * se with O'Brien-Fleming spending: at level 1-alpha for better/worse and at level
    1-2*alpha for equivalence within +-margin (TOST). It stops at the first decision; the RCIs cover
    the true difference at all looks at once, so stopping early keeps the error rates.
    """
    d = np.asarray(diffs, dtype=float)
    looks = [int(n) for n in looks]
    if not looks or looks[-1] != d.size or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 1:
        raise ValueError(f"looks must increase and end at len(diffs)={d.size}, got {looks}")
    fractions = tuple(n / d.size for n in looks)
    c_diff, c_equiv = _cached_bounds(fractions, alpha), _cached_bounds(fractions, 2 * alpha)
    for k, n in enumerate(looks):
        x = d[:n]
        decision = _decide(float(x.mean()), _paired_se(x), c_diff[k], c_equiv[k], margin, n)
        if decision:
            return SequentialResult(decision, n, d.size, k + 1, float(x.mean()))
    return SequentialResult("undecided", d.size, d.size, len(looks), float(d.mean()))


def fixed_n_paired_test(diffs, margin: float = 0.05, alpha: float = 0.05) -> str:
    """The same decision rule at a single look after all pairs (normal intervals)."""
    d = np.asarray(diffs, dtype=float)
    z, z_eq = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(1 - alpha)
    return _decide(float(d.mean()), _paired_se(d), z, z_eq, margin, d.size) or "undecided"


def simulate_sequential_error(p_base: float, p_other: float, n_max: int, look_every: int, reps: int = 2000,
                              seed: int = 0, margin: float = 0.05, alpha: float = 0.05) -> dict:
    """Run the sequential test on ``reps`` simulated studies of independent Bernoulli pairs; returns the
    fraction of each decision and the mean pairs used. With p_base == p_other, 'better' + 'worse' is the
    false-positive rate (must stay <= alpha)."""
    rng = seeding.stream(seed, "stats.sequential_sim", int(p_base * 1e6), int(p_other * 1e6), n_max)
    looks = list(range(look_every, n_max, look_every)) + [n_max]
    counts = {k: 0 for k in ("better", "worse", "equivalent", "undecided")}
    used = 0
    for _ in range(reps):
        d = (rng.random(n_max) < p_other).astype(float) - (rng.random(n_max) < p_base).astype(float)
        r = sequential_paired_test(d, looks, margin, alpha)
        counts[r.decision] += 1
        used += r.n_used
    out = {k: v / reps for k, v in counts.items()}
    out.update({"false_positive": out["better"] + out["worse"], "mean_pairs_used": used / reps, "reps": reps,
                "p_base": p_base, "p_other": p_other, "n_max": n_max, "look_every": look_every})
    return out


def wilcoxon_paired(base: np.ndarray, other: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired continuous values (1.0 when every pair ties)."""
    d = np.asarray(other, float) - np.asarray(base, float)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
