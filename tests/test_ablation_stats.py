"""Ablation statistics (the block at the end of evaluation/stats.py) against hand-computed values."""

import math

import numpy as np
import pytest

from realgap.evaluation import stats as S


# ------------------------------------------------------------------ two-level (cluster) bootstrap
def test_cluster_bootstrap_distribution_matches_hand_enumeration():
    # D = [[1, 0], [0, 0]]: a replicate's mean is w_row0 * w_col0, each weight in {0, 1/2, 1} with
    # probabilities {1/4, 1/2, 1/4}. Hence P(0) = 1 - (3/4)^2 = 7/16, P(1/4) = 1/4, P(1/2) = 2 * 1/2 * 1/4 = 1/4,
    # P(1) = 1/16.
    boot = S.cluster_bootstrap_samples(np.array([[1.0, 0.0], [0.0, 0.0]]), seed=3, n_boot=40_000)
    for value, p in ((0.0, 7 / 16), (0.25, 1 / 4), (0.5, 1 / 4), (1.0, 1 / 16)):
        assert np.mean(np.isclose(boot, value)) == pytest.approx(p, abs=0.01)
    assert np.isclose(boot, 0).sum() + np.isclose(boot, 0.25).sum() + np.isclose(boot, 0.5).sum() + np.isclose(boot, 1).sum() == boot.size


def test_hierarchical_effect_percentiles_from_the_enumerated_distribution():
    # same D as above as arms a - b; cumulative P(<= 1/2) = 15/16 = 0.9375 < 0.95, so both the 95% and the
    # 90% upper percentile are 1 and both lower ones 0; the estimate is the plain mean 1/4.
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [1.0, 1.0]])
    eff = S.hierarchical_paired_effect(a, b, seed=0, n_boot=20_000)
    assert eff.estimate == 0.25
    assert (eff.ci95.low, eff.ci95.high) == (0.0, 1.0)
    assert (eff.ci90.low, eff.ci90.high) == (0.0, 1.0)
    assert (eff.n_train_seeds, eff.n_episodes) == (2, 2)


def test_identical_arms_give_an_exact_zero_interval_and_placebo():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 50)) < 0.6).astype(float)
    eff = S.hierarchical_paired_effect(a, a.copy(), seed=1, n_boot=2000)
    assert eff.estimate == 0.0
    assert (eff.ci95.low, eff.ci95.high, eff.ci90.low, eff.ci90.high) == (0.0, 0.0, 0.0, 0.0)
    assert S.tost_verdict(eff.ci90, eff.ci95, 0.05) == "placebo"


def test_training_seed_variance_widens_the_interval():
    # the same episode-level spread, but one arm's training seeds disagree: the two-level CI must widen
    eps = np.tile((np.arange(40) % 2).astype(float), (2, 1))  # 50% on every seed
    spread = eps.copy()
    spread[0] = 1.0  # seed 0 always succeeds, seed 1 50%: a training-seed effect
    narrow = S.hierarchical_paired_effect(eps, np.zeros_like(eps), seed=0, n_boot=4000)
    wide = S.hierarchical_paired_effect(spread, np.zeros_like(spread), seed=0, n_boot=4000)
    assert (wide.ci95.high - wide.ci95.low) > (narrow.ci95.high - narrow.ci95.low) + 0.1


def test_bootstrap_rejects_bad_shapes():
    with pytest.raises(ValueError):
        S.hierarchical_paired_effect(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        S.cluster_bootstrap_samples(np.zeros(5))


# ------------------------------------------------------------------ TOST verdicts
@pytest.mark.parametrize("ci90,ci95,verdict", [
    ((-0.03, 0.04), (-0.04, 0.045), "placebo"),
    ((0.01, 0.04), (0.005, 0.045), "placebo"),     # significant but shown smaller than the margin
    ((0.08, 0.20), (0.06, 0.22), "helpful"),
    ((-0.20, -0.08), (-0.22, -0.06), "harmful"),
    ((-0.03, 0.06), (-0.04, 0.07), "undecided"),    # 90% CI crosses +margin, 95% CI crosses 0
    ((-0.05, 0.02), (-0.06, 0.03), "undecided"),    # touching the margin is not inside it
    ((0.01, 0.09), (0.001, 0.10), "helpful"),
])
def test_tost_verdicts(ci90, ci95, verdict):
    assert S.tost_verdict(S.Interval(0, *ci90), S.Interval(0, *ci95), margin=0.05) == verdict


def test_tost_margin_must_be_positive():
    with pytest.raises(ValueError):
        S.tost_verdict(S.Interval(0, 0, 0), S.Interval(0, 0, 0), margin=0)


# ------------------------------------------------------------------ Pearson r and MMRV (SIMPLER)
def simpler_pearson(x, y):
    """SIMPLER's definition written out with loops (simpler_env/utils/metrics.py semantics)."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cx, cy = [v - mx for v in x], [v - my for v in y]
    if all(a == b for a, b in zip(cx, cy)):
        return 1.0
    return sum(a * b for a, b in zip(cx, cy)) / (math.sqrt(sum(a * a for a in cx) * sum(b * b for b in cy)) + 1e-8)


def simpler_mmrv(sim, real):
    total = 0.0
    for i in range(len(sim)):
        worst = 0.0
        for j in range(len(sim)):
            if (sim[i] > sim[j]) != (real[i] > real[j]):
                worst = max(worst, abs(real[i] - real[j]))
        total += worst
    return total / len(sim)


def test_pearson_hand_value():
    # centred sim [-0.4, 0, 0.4], real [-0.3, -0.1, 0.4]: 0.28 / sqrt(0.32 * 0.26) = 0.970725...
    assert S.pearson_simpler([0.1, 0.5, 0.9], [0.2, 0.4, 0.9]) == pytest.approx(0.28 / math.sqrt(0.32 * 0.26), abs=1e-7)
    assert S.pearson_simpler([0.0, 1.0, 2.0], [5.0, 6.0, 7.0]) == 1.0  # equal centred vectors: defined as 1 (no 1e-8)
    assert S.pearson_simpler([0.1, 0.2, 0.3], [0.7, 0.6, 0.5]) == pytest.approx(-1.0, abs=1e-6)


def test_mmrv_hand_values():
    # only the pair (1, 2) is ordered differently (sim .5 > .3, real .4 < .6): gap .2 for i=1 and i=2 -> .4/3
    assert S.mmrv(sim=[0.1, 0.5, 0.3], real=[0.2, 0.4, 0.6]) == pytest.approx(0.4 / 3)
    # a sim tie against a real order is a violation for the policy that is ahead in real only: 0.2 / 2
    assert S.mmrv(sim=[0.5, 0.5], real=[0.2, 0.4]) == pytest.approx(0.1)
    assert S.mmrv(sim=[0.1, 0.2, 0.3], real=[0.3, 0.5, 0.9]) == 0.0
    # swapping the arguments weights violations by sim gaps instead: different value
    assert S.mmrv(sim=[0.1, 0.9, 0.5], real=[0.2, 0.3, 0.4]) != S.mmrv(sim=[0.2, 0.3, 0.4], real=[0.1, 0.9, 0.5])


def test_pearson_and_mmrv_match_simpler_on_random_inputs():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(2, 9))
        sim = np.round(rng.random(n), 1)  # rounding makes ties common
        real = np.round(rng.random(n), 1)
        assert S.pearson_simpler(sim, real) == pytest.approx(simpler_pearson(list(sim), list(real)), abs=1e-12)
        assert S.mmrv(sim=sim, real=real) == pytest.approx(simpler_mmrv(list(sim), list(real)), abs=1e-12)


def test_agreement_bootstrap_collapses_for_deterministic_policies():
    sim = [np.zeros(20), np.ones(20), np.r_[np.ones(10), np.zeros(10)]]
    real = [np.zeros(20), np.ones(20), np.ones(20)]
    ag = S.sim_real_agreement(sim, real, seed=0, n_boot=500)
    # real of policy 2 is constant 1 -> its bootstrap is always 1; sim of policy 2 varies around 0.5
    assert ag["pearson"].estimate == pytest.approx(S.pearson_simpler([0, 1, 0.5], [0, 1, 1]))
    assert ag["mmrv"].estimate == pytest.approx(S.mmrv(sim=[0, 1, 0.5], real=[0, 1, 1]))
    assert ag["pearson"].low <= ag["pearson"].estimate <= ag["pearson"].high
    exact = S.sim_real_agreement([np.zeros(5), np.ones(5)], [np.zeros(5), np.ones(5)], n_boot=200)
    assert (exact["pearson"].low, exact["pearson"].high) == (1.0, 1.0)
    assert (exact["mmrv"].low, exact["mmrv"].high) == (0.0, 0.0)


# ------------------------------------------------------------------ group-sequential test
def test_single_look_bound_is_the_fixed_n_quantile():
    assert S.group_sequential_bounds([1.0], 0.05)[0] == pytest.approx(1.959964, abs=1e-5)
    # first look: all of obf_spending(t1) is spent there, so c1 = z_{alpha/2} / sqrt(t1)
    assert S.group_sequential_bounds([0.25, 1.0], 0.05)[0] == pytest.approx(1.959964 / 0.5, abs=1e-5)


def test_bounds_spend_exactly_alpha_on_brownian_paths():
    fractions = [0.2, 0.4, 0.6, 0.8, 1.0]
    c = S.group_sequential_bounds(fractions, 0.05)
    assert np.all(np.diff(c) < 0) and c[-1] > 1.96  # decreasing, last above the fixed-N value
    rng = np.random.default_rng(11)
    n = 400_000
    score = np.cumsum(rng.normal(0, np.sqrt(0.2), size=(n, 5)), axis=1)  # Brownian motion at t = .2 ... 1
    crossed = np.any(np.abs(score) >= c * np.sqrt(fractions), axis=1)
    assert crossed.mean() == pytest.approx(0.05, abs=0.0025)


def test_sequential_decisions():
    same = np.zeros(100)
    r = S.sequential_paired_test(same, [20, 40, 60, 80, 100], margin=0.05)
    assert r.decision == "equivalent" and r.n_used < 100
    better = np.r_[np.ones(40), np.zeros(60)]  # other wins 40 pairs, never loses
    r = S.sequential_paired_test(better, [20, 40, 60, 80, 100])
    assert r.decision == "better" and r.n_used == 20
    assert S.sequential_paired_test(-better, [20, 40, 60, 80, 100]).decision == "worse"
    assert S.fixed_n_paired_test(better) == "better"
    noisy = np.tile([1.0, -1.0], 50)
    assert S.sequential_paired_test(noisy, [20, 40, 60, 80, 100]).decision == "undecided"
    with pytest.raises(ValueError):
        S.sequential_paired_test(same, [20, 40, 60])


def test_sequential_false_positive_rate_on_equal_rates():
    for p in (0.3, 0.5):
        sim = S.simulate_sequential_error(p, p, n_max=60, look_every=12, reps=3000, seed=2)
        # <= alpha up to Monte-Carlo error (sd ~0.004)
        assert sim["false_positive"] <= 0.05 + 0.008
        assert sim["better"] + sim["worse"] + sim["equivalent"] + sim["undecided"] == pytest.approx(1.0)


def test_sequential_saves_rollouts_on_a_large_difference():
    sim = S.simulate_sequential_error(0.2, 0.8, n_max=100, look_every=20, reps=300, seed=0)
    assert sim["better"] > 0.99
    assert sim["mean_pairs_used"] <= 60
