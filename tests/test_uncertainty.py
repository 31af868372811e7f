"""Pure uncertainty functions: per-replan scores, aggregates, split conformal, detector metrics."""

import itertools
import math

import numpy as np
import pytest

from realgap.errors import RealgapError
from realgap.evaluation import uncertainty as U


def test_total_prefix_and_gripper_variance_match_hand_computation():
    c = np.zeros((2, 4, 4))
    c[1] = 2.0  # every element: samples {0, 2} -> unbiased variance 2
    assert U.total_variance(c) == pytest.approx(8.0)  # 4 dims summed, averaged over the horizon
    assert U.gripper_variance(c) == pytest.approx(2.0)
    c2 = c.copy()
    c2[1, 3] = 0.0  # disagreement only outside the executed prefix [1, 3)
    c2[1, 0] = 0.0
    assert U.prefix_variance(c2, 1, 2) == pytest.approx(8.0)
    assert U.total_variance(c2) == pytest.approx(4.0)
    g = np.zeros((3, 4, 4))
    g[1:, :, 3] = 1.0  # only the gripper disagrees
    assert U.gripper_variance(g) == pytest.approx(1 / 3) and U.total_variance(g) == pytest.approx(1 / 3)


def test_mode_aware_score_ignores_two_tight_modes_but_not_a_diffuse_cloud():
    rng = np.random.default_rng(0)
    two = np.concatenate([np.full((4, 8, 4), -0.5), np.full((4, 8, 4), 0.5)]) + 0.01 * rng.standard_normal((8, 8, 4))
    diffuse = 0.5 * rng.standard_normal((8, 8, 4))
    assert U.total_variance(two) > 1.0
    assert U.mode_variance(two) < 0.01 * U.total_variance(two)
    assert U.mode_variance(diffuse) > 0.5 * U.total_variance(diffuse)
    # the executed chunk's nearest neighbour: another seed agreeing with it -> 0
    assert U.executed_nn_distance(two, 0, 8) < 0.01
    lone = two.copy()
    lone[0] = 0.0  # the executed sample sits between the modes, alone
    assert U.executed_nn_distance(lone, 0, 8) > 0.2


def test_k_below_two_is_refused():
    with pytest.raises(RealgapError, match="K >= 2"):
        U.total_variance(np.zeros((1, 4, 4)))


def test_overlap_mmd_compares_the_same_env_steps():
    rng = np.random.default_rng(1)
    prev = rng.standard_normal((6, 8, 2)) * 0.05
    cur = np.concatenate([prev[:, 3:], np.zeros((6, 3, 2))], axis=1)  # same predictions, shifted by 3 steps
    assert U.overlap_mmd(prev, cur, 3) == pytest.approx(0.0, abs=1e-12)
    assert U.overlap_mmd(prev, cur + 0.5, 3) > 0.1
    assert U.overlap_mmd(prev, cur, 2) > U.overlap_mmd(prev, cur, 3)  # misaligned steps disagree
    assert math.isnan(U.overlap_mmd(prev, cur, 8))


def test_running_max_alarm_and_aggregates():
    steps, trace = [0, 8, 16, 24], [0.1, math.nan, 0.5, 0.2]
    assert U.running_max(trace).tolist() == [0.1, 0.1, 0.5, 0.5]
    assert U.alarm_step(steps, trace, 0.3) == 16
    assert U.alarm_step(steps, trace, 0.5) is None  # strictly greater
    assert U.aggregate(trace, "max") == 0.5
    assert U.aggregate(trace, "mean") == pytest.approx(0.8 / 3)
    assert U.aggregate([1, 2, 3, 4, 5, 6, 7, 8], "topq", 0.25) == pytest.approx(7.5)
    with pytest.raises(RealgapError, match="aggregate"):
        U.aggregate(trace, "median")


def test_conformal_rank_is_exact_where_floating_point_is_not():
    assert math.ceil(100 * (1 - 0.41)) == 60  # the trap: 100 * 0.59 = 59.00000000000001
    assert U.conformal_rank(99, 0.41) == 59 and U.conformal_rank(149, 0.18) == 123
    assert U.conformal_rank(59, 0.1) == 54
    scores = np.arange(59, dtype=float)[::-1]
    thr, k = U.conformal_threshold(scores, 0.1)
    assert (thr, k) == (53.0, 54)
    assert U.min_calibration(0.1) == 9 and U.min_calibration(0.05) == 19
    U.conformal_threshold(np.arange(9.0), 0.1)  # n = 1/alpha - 1 is enough
    with pytest.raises(RealgapError, match="n >= 1/alpha - 1 = 9"):
        U.conformal_threshold(np.arange(8.0), 0.1)
    for bad in (0.0, 1.0, -0.2, 1.5, "x"):
        with pytest.raises(RealgapError, match="alpha"):
            U.conformal_threshold(np.arange(50.0), bad)


def test_conformal_false_alarm_rate_keeps_its_promise():
    """Exchangeable successes: P(new success flagged) lies in [alpha - 1/(n+1), alpha]."""
    rng = np.random.default_rng(2)
    n, alpha, trials = 19, 0.2, 4000
    flagged = 0
    for _ in range(trials):
        s = rng.standard_normal(n + 1)
        thr, _ = U.conformal_threshold(s[:n], alpha)
        flagged += s[n] > thr
    rate, se = flagged / trials, math.sqrt(alpha * (1 - alpha) / trials)
    assert alpha - 1 / (n + 1) - 3 * se <= rate <= alpha + 3 * se


def test_auroc_equals_pairwise_count_with_half_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, 40).astype(float)
    y = rng.random(40) < 0.4
    pairs = [(a, b) for a, b in itertools.product(s[y], s[~y])]
    brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert U.auroc(s, y) == pytest.approx(brute)
    assert math.isnan(U.auroc(s, np.zeros(40, bool)))
    ci = U.auroc_ci(s, y, n_boot=300, seed=1)
    assert ci["low"] <= ci["estimate"] <= ci["high"] and ci == U.auroc_ci(s, y, n_boot=300, seed=1)


def test_detection_capture_and_lead_time():
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.05])
    y = np.array([True, True, True, False, False, False])
    d = U.detection(s, y, 0.5)
    assert (d["tpr"]["k"], d["tpr"]["n"], d["fpr"]["k"], d["fpr"]["n"]) == (2, 3, 1, 3)
    assert d["balanced_accuracy"] == pytest.approx(0.5 * (2 / 3 + 2 / 3))
    assert U.top_fraction_capture(s, y, 0.2)["k"] == 2  # top ceil(1.2) = 2 episodes, both failures
    lt = U.lead_times([10, None, 50], [40, 60, 45])
    assert lt["alarmed"] == 2 and lt["alarmed_before_failure"]["k"] == 1 and lt["median_lead"] == pytest.approx(12.5)


def test_time_matched_auroc_is_immune_to_episode_length():
    """A score that only grows with elapsed time separates long (failed) episodes at episode level,
    but not among episodes still running at the same step."""
    rng = np.random.default_rng(4)
    eps = []
    for i in range(60):
        fail = i % 2 == 0
        length = 120 if fail else int(rng.integers(20, 40))
        steps = list(range(0, length, 8))
        trace = np.array(steps, float) * 0.01 + 0.001 * rng.random(len(steps))
        eps.append({"length": length, "positive": fail, "replan_steps": steps, "traces": {"t": trace}})
    y = [e["positive"] for e in eps]
    assert U.auroc([U.aggregate(e["traces"]["t"]) for e in eps], y) > 0.99
    tm = U.time_matched_auroc(eps, "t", [0, 8, 16])
    assert all(abs(r["estimate"] - 0.5) < 0.25 for r in tm)
    assert tm[0]["n_pos"] == 30 and tm[0]["n_neg"] == 30
    late = U.time_matched_auroc(eps, "t", [48])[0]
    assert late["n_neg"] == 0 and math.isnan(late["estimate"])  # no successes still running: undefined, not 1.0
