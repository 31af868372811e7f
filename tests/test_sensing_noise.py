"""The DomainRandomization wrapper's observation noise, measured against the env's clean state.

- its std is the configured ``obs_noise_std`` (times ``scale``), zero-mean, fresh every step;
- it never touches ``present`` flags or absent (all-zero) rows, keys outside ``obs_keys``, or
  non-float observations (images, text);
- it is seeded by the episode seed: same seed -> the same noise, another seed -> other noise;
- on a foreign env (Gymnasium's Reacher-v5, a Box observation) every float gets it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from test_randomization import only

import realgap.envs
from realgap.randomization import DomainRandomization

ID = "realgap/PlaceInReceptacle-v0"
SIGMA = 0.01
STEPS = 40


def sensing(sigma=SIGMA, scale=1.0, **over):
    cfg = only("sensing", obs_noise_std=sigma, action_noise_std=0.0, latency_steps=[0, 0], **over)
    cfg["scale"] = scale
    return cfg


def residuals(cfg, seed, steps=STEPS, **env_kwargs):
    """Per step: noisy observation minus the env's clean observation of the same state (float64)."""
    env = realgap.envs.make(ID, randomization=cfg, **env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        out = []
        for t in range(steps):
            clean = env.unwrapped._observe()
            out.append({k: (np.asarray(v, np.float64) - np.asarray(clean[k], np.float64)) if k != "instruction" else v == clean[k]
                        for k, v in obs.items()})
            obs, *_ = env.step(np.array([0.2 * np.sin(t), 0.1, -0.1, 1.0 if t > 20 else -1.0], np.float32))
        return out, clean
    finally:
        env.close()


@pytest.fixture(scope="module")
def run():
    return residuals(sensing(), seed=11)


def _split(res, clean):
    rows = np.asarray(clean["object_state"]).reshape(-1, 6)
    present = rows[:, 0] == 1
    obj = np.stack([r["object_state"] for r in res]).reshape(len(res), -1, 6)
    return np.stack([r["proprio"] for r in res]), obj, present


def test_noise_has_the_configured_std_and_is_fresh_each_step(run):
    res, clean = run
    proprio, obj, present = _split(res, clean)
    for noise in (proprio, obj[:, present, 1:]):
        assert 0.9 * SIGMA < noise.std() < 1.1 * SIGMA
        assert abs(noise.mean()) < 0.1 * SIGMA
    flat = proprio.reshape(STEPS, -1)
    lag1 = np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]
    assert abs(lag1) < 0.2  # a new draw every step, not a fixed per-episode offset


def test_flags_and_absent_rows_are_never_noisy(run):
    res, clean = run
    _, obj, present = _split(res, clean)
    assert present.any() and (~present).any()
    assert np.all(obj[:, :, 0] == 0)  # present flags exact, 1 or 0
    assert np.all(obj[:, ~present] == 0)  # absent rows stay exactly zero
    assert np.all(obj[:, present, 1:] != 0)  # every pose value of a present row is noisy


def test_scale_and_obs_keys_select_how_much_and_where():
    res, clean = residuals(sensing(scale=0.5, obs_keys="proprio"), seed=11, steps=20)
    proprio, obj, _ = _split(res, clean)
    assert 0.85 * SIGMA / 2 < proprio.std() < 1.15 * SIGMA / 2
    assert np.all(obj == 0)  # object_state is not in obs_keys


def test_images_and_text_pass_untouched():
    res, _ = residuals(sensing(), seed=11, steps=3, obs_mode="state+image", image_size=32)
    for r in res:
        assert np.all(r["image_front"] == 0) and r["instruction"] is True
        assert np.abs(r["proprio"]).max() > 0


def test_same_seed_same_noise_other_seed_other_noise(run):
    res, clean = run
    again, _ = residuals(sensing(), seed=11)
    for a, b in zip(res, again):
        assert all(np.array_equal(a[k], b[k]) for k in ("proprio", "object_state"))
    other, _ = residuals(sensing(), seed=12)
    a, b = np.stack([r["proprio"] for r in res]), np.stack([r["proprio"] for r in other])
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.2  # independent draws, not the same sequence


def test_foreign_box_observation_gets_noise_on_every_float():
    cfg = sensing(obs_keys=".*")
    seqs = []
    for seed in (3, 3, 4):
        env = DomainRandomization(gym.make("Reacher-v5"), cfg)
        try:
            obs, _ = env.reset(seed=seed)
            res = []
            for _ in range(STEPS):
                res.append(obs - env.unwrapped._get_obs())
                obs, *_ = env.step(np.zeros(2, np.float32))
            seqs.append(np.asarray(res))
        finally:
            env.close()
    noise = seqs[0]
    assert noise.shape == (STEPS, 10) and np.all(noise != 0)
    assert 0.9 * SIGMA < noise.std() < 1.1 * SIGMA
    assert np.array_equal(seqs[0], seqs[1]) and not np.allclose(seqs[0], seqs[2])
