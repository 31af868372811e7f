"""Chunk-disagreement uncertainty: per-replan scores, conformal calibration, detector metrics.

``realgap uncertainty out=<suite>`` (calibrate + score + metrics) and ``realgap score`` (offline
re-sampling of logged episodes) write their results under ``<out>/uncertainty/``. The review queue
(``realgap review``) reads exactly these two files.

Output files (schema "realgap.uncertainty/1")
=============================================

``<out>/uncertainty/calibration.json``: the conformal threshold and what it is valid for::

    {
      "schema": "realgap.uncertainty/1",
      "score": "total_var",             # primary per-replan score (see SCORES below)
      "aggregate": "max",               # per-episode aggregate the threshold applies to
      "threshold": 0.0123,              # flag an episode when its aggregate score > threshold
                                        # (online: first step whose causal running max > threshold)
      "alpha": 0.1,                     # target false-alarm rate on successes
      "n": 57,                          # calibration successes used
      "rank": 52,                       # k = ceil((n+1)(1-alpha)); threshold = k-th smallest score
      "k_samples": 8,                   # chunks sampled per replan (K)
      "calibration_seeds": [2000000, ...],    # seeds of the calibration successes used
      "calibration_condition": "nominal",
      "thresholds": {"total_var": 0.0123, "prefix_var": ..., ...},   # same rule, every score
      "policy": "checkpoints/state_policy",   # spec as given
      "policy_digest": "sha256:..."           # of the checkpoint's policy.json + weights
    }

``<out>/uncertainty/episodes.json``: one entry per scored episode::

    {
      "schema": "realgap.uncertainty/1",
      "store": "/abs/path/to/episodes.zarr",  # the episode store the indices refer to
      "score": "total_var", "threshold": 0.0123, "alpha": 0.1, "k_samples": 8,
      "n_obs_steps": 2,                       # chunk row j predicts env step (replan step - n_obs_steps + 1 + j)
      "n_action_steps": 8,                    # executed prefix length (sample 0 is executed)
      "episodes": [
        {
          "episode": 12,                      # index in the store (ReplayBuffer.episode(12))
          "condition": "target_lab", "seed": 100003,
          "success": false,                   # null when the log has no outcome
          "termination_reason": "timeout",    # "" when unknown
          "length": 120,                      # env steps
          "failure_step": 120,                # env step of the failure event (the episode end when the
                                              # env gave no event); null for successes
          "score": 0.031,                     # per-episode aggregate (max) of the primary score
          "scores": {"total_var": 0.031, "prefix_var": ..., "gripper_var": ..., "mode_var": ...,
                     "stac": ..., "novelty": ..., "denoise_loss": ..., "random": ...},  # max of each
          "trace": [{"step": 0, "score": 0.004}, {"step": 8, "score": 0.011}, ...],  # primary, per replan
          "alarm_step": 48,                   # first replan step whose running max > threshold; null if none
          "flagged": true,                    # alarm_step is not null (== score > threshold)
          "chunks_source": "stored"           # "stored" (data/chunks of the run) or "resampled" (offline)
        }, ...
      ]
    }

The K sampled chunks themselves are in the store, not in JSON: ``data/chunks`` (see below).
``realgap uncertainty`` also writes ``metrics.json`` (detector figures per condition, false-alarm rate,
noise floor, goals), ``index.html``, ``novelty.npz`` (the embedding Gaussian, reused by ``realgap score``)
and the calibration suite under ``calibration/``.

Chunks in the episode store
===========================
``data/chunks``: float32, shape (rows, K, horizon, action_dim), one row per step row of the store
(row t of an episode = the step whose observation o_t the policy acted on). Rows where the policy
replanned hold the K chunks sampled there, in raw action units (like ``data/action``); all other rows
are NaN. Sample 0 is the executed one: the env executed ``chunks[t, 0, n_obs_steps-1 : n_obs_steps-1+n_action_steps]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from realgap import seeding
from realgap.errors import RealgapError

from .stats import wilson

# Per-replan scores from the K chunks sampled at one replan (normalised actions, (K, horizon, action_dim)).
CHUNK_SCORES = ("total_var", "prefix_var", "gripper_var", "mode_var", "exec_nn")
# Baselines scored on the same replans: STAC-style overlap inconsistency, observation novelty,
# the executed chunk's denoising loss, and a random score.
BASELINES = ("stac", "novelty", "denoise_loss", "random")
ALL_SCORES = CHUNK_SCORES + BASELINES
AGGREGATES = ("max", "mean", "topq")


# ------------------------------------------------------------------ per-replan scores
def _check_k(chunks: np.ndarray) -> np.ndarray:
    chunks = np.asarray(chunks, np.float64)
    if chunks.ndim != 3:
        raise ValueError(f"chunks must be (K, horizon, action_dim), got shape {chunks.shape}")
    if chunks.shape[0] < 2:
        raise RealgapError(f"k: {chunks.shape[0]} sample(s) per replan; disagreement needs K >= 2")
    return chunks


def total_variance(chunks: np.ndarray) -> float:
    """Variance across the K samples (unbiased), summed over action dims, averaged over the horizon."""
    c = _check_k(chunks)
    return float(c.var(axis=0, ddof=1).sum(axis=-1).mean())


def prefix_variance(chunks: np.ndarray, start: int, length: int) -> float:
    """``total_variance`` over the executed prefix ``[start, start + length)`` only."""
    return total_variance(_check_k(chunks)[:, start:start + length])


def gripper_variance(chunks: np.ndarray, dim: int = -1) -> float:
    """Variance of the gripper dimension alone (bimodal by nature: open / close), averaged over the horizon."""
    c = _check_k(chunks)
    return float(c[..., dim].var(axis=0, ddof=1).mean())


def two_means(x: np.ndarray, iters: int = 20) -> np.ndarray:
    """Deterministic 2-means labels for the rows of ``x`` (init: the farthest pair)."""
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    centres = x[[i, j]].copy()
    labels = np.zeros(len(x), int)
    for _ in range(iters):
        new = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        for c in (0, 1):
            if np.any(labels == c):
                centres[c] = x[labels == c].mean(0)
    return labels


def mode_variance(chunks: np.ndarray) -> float:
    """Within-cluster spread after 2-means over the K chunks, on the scale of ``total_variance``.

    Two tight clusters (two equally good grasps) score near zero; a diffuse cloud scores like its
    total variance. Degrees of freedom: K - (number of clusters); 0 for K = 2.
    """
    c = _check_k(chunks)
    k, h, _ = c.shape
    if k <= 2:
        return 0.0
    flat = c.reshape(k, -1)
    labels = two_means(flat)
    ssw = sum(((flat[labels == g] - flat[labels == g].mean(0)) ** 2).sum() for g in set(labels.tolist()))
    return float(ssw / (k - len(set(labels.tolist()))) / h)


def executed_nn_distance(chunks: np.ndarray, start: int, length: int) -> float:
    """Squared distance (per step, summed over dims) from the executed prefix (sample 0) to its nearest other sample.

    Low when some other seed agrees with what the robot did, even if the cloud is multimodal.
    """
    c = _check_k(chunks)[:, start:start + length]
    d = ((c[1:] - c[0]) ** 2).sum(-1).mean(-1)
    return float(d.min())


def chunk_scores(chunks: np.ndarray, start: int, length: int, gripper_dim: int = -1) -> dict[str, float]:
    """Every chunk-disagreement score of one replan; ``start``/``length`` = the executed prefix."""
    return {
        "total_var": total_variance(chunks),
        "prefix_var": prefix_variance(chunks, start, length),
        "gripper_var": gripper_variance(chunks, gripper_dim),
        "mode_var": mode_variance(chunks),
        "exec_nn": executed_nn_distance(chunks, start, length),
    }


def overlap_mmd(prev: np.ndarray, cur: np.ndarray, offset: int, bandwidth: float = 0.2) -> float:
    """STAC-style temporal inconsistency: MMD^2 between two replans' sample clouds on their overlapping steps.

    ``prev`` was sampled ``offset`` env steps before ``cur``; prediction j of ``cur`` and j + offset of
    ``prev`` are the same env step. RBF kernel with a fixed per-element ``bandwidth`` (normalised units).
    NaN when the chunks do not overlap.
    """
    prev, cur = np.asarray(prev, np.float64), np.asarray(cur, np.float64)
    h = cur.shape[1]
    if offset <= 0 or offset >= h:
        return math.nan
    a, b = prev[:, offset:].reshape(len(prev), -1), cur[:, :h - offset].reshape(len(cur), -1)
    scale = 2.0 * a.shape[1] * bandwidth ** 2

    def kern(x, y):
        return np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / scale)

    return float(kern(a, a).mean() + kern(b, b).mean() - 2.0 * kern(a, b).mean())


def fit_gaussian(embeddings: np.ndarray, shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of embeddings (rows), covariance shrunk toward its diagonal.

    Default shrinkage max(0.1, min(1, dim / n)): with fewer rows than dimensions the sample
    covariance is singular, so lean on the diagonal.
    """
    x = np.asarray(embeddings, np.float64)
    if len(x) < 2:
        raise RealgapError(f"novelty: {len(x)} embedding(s) to fit; need at least 2")
    if shrinkage is None:
        shrinkage = max(0.1, min(1.0, x.shape[1] / len(x)))
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(mean))
    return mean, np.linalg.inv(cov)


def mahalanobis(embeddings: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = np.asarray(embeddings, np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", d, precision, d), 0.0))


def random_scores(seed: int, n: int) -> np.ndarray:
    """The random baseline: uniform scores from the episode seed's own stream."""
    return seeding.stream(int(seed), "uncertainty_random").random(n)


# ---------------------------------------------------------------- per-episode aggregates
def running_max(trace: Sequence[float]) -> np.ndarray:
    """Causal running max (NaN replans, e.g. STAC's first one, count as -inf until a value arrives)."""
    x = np.asarray(trace, np.float64)
    if not len(x):
        return x
    return np.maximum.accumulate(np.where(np.isnan(x), -np.inf, x))


def aggregate(trace: Sequence[float], how: str = "max", q: float = 0.25) -> float:
    """Per-episode score: ``max``, ``mean`` or ``topq`` (mean of the top ``q`` fraction of replans)."""
    x = np.asarray(trace, np.float64)
    x = x[~np.isnan(x)]
    if not len(x):
        return -math.inf
    if how == "max":
        return float(x.max())
    if how == "mean":
        return float(x.mean())
    if how == "topq":
        n = max(1, math.ceil(q * len(x)))
        return float(np.sort(x)[-n:].mean())
    raise RealgapError(f"aggregate: unknown '{how}' ({' | '.join(AGGREGATES)})")


def alarm_step(steps: Sequence[int], trace: Sequence[float], threshold: float) -> int | None:
    """Online alarm: the first replan step whose causal running max exceeds ``threshold``."""
    rm = running_max(trace)
    hit = np.flatnonzero(rm > threshold)
    return int(steps[hit[0]]) if len(hit) else None


# ---------------------------------------------------------------------- calibration
def check_alpha(alpha: float, field: str = "alpha") -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise RealgapError(f"{field}: expected a number in (0, 1), got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise RealgapError(f"{field}: {alpha} is outside (0, 1)")
    return a


def min_calibration(alpha: float) -> int:
    """Smallest n for which the split-conformal threshold is finite: n >= 1/alpha - 1."""
    return math.ceil(round(1.0 / check_alpha(alpha) - 1.0, 9))


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n+1)(1-alpha)), rounded first so 60 * 0.9 is 54, not 55."""
    return math.ceil(round((n + 1) * (1.0 - check_alpha(alpha)), 9))


def conformal_threshold(scores: Sequence[float], alpha: float, field: str = "calibration") -> tuple[float, int]:
    """Split-conformal threshold: the k-th smallest of n success scores; returns (threshold, k).

    Flagging ``score > threshold`` keeps P(flag | success) <= alpha for an exchangeable new success.
    """
    x = np.sort(np.asarray(scores, np.float64))
    n = len(x)
    need = min_calibration(alpha)
    if n < need:
        raise RealgapError(f"{field}: {n} calibration successes; alpha={alpha} needs n >= 1/alpha - 1 = {need}")
    k = conformal_rank(n, alpha)
    return (float(x[k - 1]) if k <= n else math.inf), k


# ------------------------------------------------------------------ detector metrics
def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Mann-Whitney U / (n+ n-), ties count 1/2; NaN without both classes."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auroc_ci(scores: Sequence[float], positive: Sequence[bool], n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> dict:
    """AUROC with a percentile bootstrap CI over episodes (resampled within each class)."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    est = auroc(s, y)
    out = {"estimate": est, "low": math.nan, "high": math.nan, "n_pos": int(y.sum()), "n_neg": int((~y).sum())}
    if math.isnan(est) or n_boot <= 0:
        return out
    rng = seeding.stream(seed, "auroc_bootstrap")
    pos, neg = s[y], s[~y]
    vals = [auroc(np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))],
                  np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]) for _ in range(n_boot)]
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    out.update(low=float(lo), high=float(hi))
    return out


def rate(k: int, n: int) -> dict:
    """A rate with its Wilson 95% interval."""
    iv = wilson(int(k), int(n))
    return {"k": int(k), "n": int(n), **iv.as_dict()}


def top_fraction_capture(scores: Sequence[float], positive: Sequence[bool], fraction: float = 0.2) -> dict:
    """Share of all failures among the top ``fraction`` of episodes by score (what a reviewer would see)."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    m = math.ceil(fraction * len(s))
    top = np.argsort(-s, kind="stable")[:m]
    return rate(int(y[top].sum()), int(y.sum()))


def detection(scores: Sequence[float], positive: Sequence[bool], threshold: float) -> dict:
    """TPR, FPR (with Wilson CIs) and balanced accuracy of ``score > threshold``."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    flag = s > threshold
    tpr, fpr = rate(int((flag & y).sum()), int(y.sum())), rate(int((flag & ~y).sum()), int((~y).sum()))
    bal = 0.5 * (tpr["estimate"] + 1.0 - fpr["estimate"]) if y.any() and (~y).any() else math.nan
    return {"tpr": tpr, "fpr": fpr, "balanced_accuracy": bal}


def lead_times(alarms: Sequence[int | None], failure_steps: Sequence[int]) -> dict:
    """Detection lead time over failures: failure step - first alarm step (alarms after the failure are late)."""
    leads = [f - a for a, f in zip(alarms, failure_steps) if a is not None]
    n = len(failure_steps)
    before = sum(1 for x in leads if x > 0)
    return {"n_failures": n, "alarmed": len(leads), "alarmed_before_failure": rate(before, n),
            "median_lead": float(np.median(leads)) if leads else None,
            "median_alarm_before_failure": bool(leads) and float(np.median(leads)) > 0}


def time_matched_auroc(episodes: Sequence[Mapping[str, Any]], score: str, steps: Sequence[int],
                       n_boot: int = 0, seed: int = 0) -> list[dict]:
    """AUROC at fixed env steps t over the episodes still running at t (length > t).

    Each episode's score at t is the causal running max of its replans at steps <= t, so every
    compared episode has the same elapsed time: length cannot explain the result.
    ``episodes``: dicts with ``length``, ``positive``, ``replan_steps`` and ``traces[score]``.
    """
    out = []
    for t in steps:
        s, y = [], []
        for e in episodes:
            if e["length"] <= t:
                continue
            rs = np.asarray(e["replan_steps"])
            tr = np.asarray(e["traces"][score], np.float64)[rs <= t]
            s.append(running_max(tr)[-1] if len(tr) else -math.inf)
            y.append(bool(e["positive"]))
        row = auroc_ci(s, y, n_boot, seed) if s else {"estimate": math.nan, "n_pos": 0, "n_neg": 0}
        out.append({"step": int(t), **row})
    return out
