"""A held-out object succeeds about as often as the training object of the same geometry.

The green vial (held out: never in a demo) and the orange vial (trained) have the same shape and
size. On the same seeds with the two pools ``(X vial, red block, blue block)``, the task sampler picks
the same layout and the same target slot, so the only difference is which vial stands there. Before
the sensing/normalizer fix the shipped policy read the green vial's row as ~130x noise: 0/8 green
against 6/8 orange. The policy is the oracle-grounded state policy, so the colour word is looked up,
not learned; what this checks is that an unseen item's row reaches the network at sane values.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import realgap.envs  # noqa: E402
from realgap.envs.tasks import sample_task  # noqa: E402
from realgap.policies.checkpoint import load_diffusion, load_policy  # noqa: E402
from realgap.policies.rollout import rollout_success  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "realgap" / "checkpoints" / "state_policy"
RECEPTACLES = ("yellow rack", "grey bowl", "pink tray", "white crate")
N = 8


def pool(vial: str) -> tuple[str, ...]:
    return (f"{vial} vial", "red block", "blue block")


def vial_target_seeds(n: int, start: int = 2_000_000) -> list[int]:
    """Seeds (far from demo and selection seeds) whose target is the vial, whichever vial it is."""
    seeds, s = [], start
    while len(seeds) < n:
        if sample_task(s, pool("orange"), RECEPTACLES).target_object == "orange vial":
            seeds.append(s)
        s += 1
    return seeds


def test_same_seeds_give_the_same_layout_with_either_vial():
    for s in vial_target_seeds(4):
        a, b = sample_task(s, pool("orange"), RECEPTACLES), sample_task(s, pool("green"), RECEPTACLES)
        assert b.target_object == "green vial" and a.object_slots == b.object_slots
        assert (a.target_receptacle, a.receptacle_slots) == (b.target_receptacle, b.receptacle_slots)


def test_held_out_row_reaches_the_policy_at_sane_values():
    policy = load_diffusion(CHECKPOINT)
    env = realgap.envs.make("realgap/PlaceInReceptacle-v0", objects=pool("green"), receptacles=RECEPTACLES,
                            allow_held_out=True)
    try:
        obs, _ = env.reset(seed=vial_target_seeds(1)[0])
    finally:
        env.close()
    x = policy.normalizer.normalize("object_state", np.asarray(obs["object_state"], np.float32)[None])
    assert np.abs(x).max() < 3.0, x  # min-max [-1, 1] for trained dims, raw-ish for never-seen ones


@pytest.mark.slow
def test_held_out_vial_succeeds_about_as_often_as_the_trained_vial():
    seeds = vial_target_seeds(N)
    rates = {}
    for vial in ("orange", "green"):
        executor = load_policy(CHECKPOINT)
        make = lambda: realgap.envs.make("realgap/PlaceInReceptacle-v0", objects=pool(vial), receptacles=RECEPTACLES,  # noqa: E731
                                         allow_held_out=True)
        rates[vial] = sum(rollout_success(make, executor, seeds, batch=N))
    # Tolerance: with 8 paired seeds, two policies of equal true rate p ~ 0.8 differ by > 3 successes
    # with probability < 5% (discordant pairs are rare when the layout is shared); the broken
    # normalizer gave a gap of 6 (0/8 vs 6/8). A floor of 4/8 for the held-out vial rules out the
    # "unseen row blows up" failure even if both rates drop together.
    assert rates["green"] >= rates["orange"] - 3 and rates["green"] >= N // 2, rates
