"""The target domain's declared effects, observed in realgap's env (not just in the yaml or dr_params).

``realgap/conf/randomization/target_lab.yaml`` declares: lights moved and dimmed (headlight too),
brighter colours and darker textures, a wider fovy plus a fixed camera mis-calibration (position and
rotation bias), pre-placement with probability 0.3, lower friction on every geom, heavier bodies,
more damping, a softer servo, 2x observation noise, action noise and a 1-step action latency.
Each is checked against the same seed's episode in the env without DR: model fields (and the
mass-derived constants), the commanded end-effector target (latency, action noise), observations
against the env's clean state (observation noise), preplaced distractors, and the rendered frame.
The domain is fixed: same seed -> identical episode; another seed changes only the per-step noise
and the pre-placement coin flips.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from test_randomization import load

import realgap.envs
from realgap.envs.catalogue import ITEM_NAMES
from realgap.envs.place_env import MAX_EE_STEP

ID = "realgap/PlaceInReceptacle-v0"
SEED = 4
TARGET = load("target_lab")
AX = TARGET["axes"]
FIELDS = ("light_pos", "light_dir", "light_diffuse", "light_ambient", "geom_rgba", "geom_matid", "mat_rgba", "tex_data",
          "cam_pos", "cam_quat", "cam_fovy", "geom_friction", "body_mass", "body_inertia", "body_subtreemass",
          "dof_damping", "actuator_gainprm", "actuator_biasprm")


def _fields(env) -> dict[str, np.ndarray]:
    m = env.unwrapped.model
    out = {f: np.array(getattr(m, f)) for f in FIELDS}
    out["headlight"] = np.concatenate([m.vis.headlight.diffuse, m.vis.headlight.ambient])
    return out


@pytest.fixture(scope="module")
def pair():
    """(nominal fields, target fields) of the same seed's episode."""
    nominal, target = realgap.envs.make(ID), realgap.envs.make(ID, randomization=TARGET)
    try:
        nominal.reset(seed=SEED)
        target.reset(seed=SEED)
        yield _fields(nominal), _fields(target)
    finally:
        nominal.close()
        target.close()


def _v(key):
    lo, hi = key
    assert lo == hi  # fixed, not a range
    return lo


def test_lighting_moved_and_dimmed(pair):
    nom, got = pair
    cfg = AX["lighting"]
    np.testing.assert_allclose(got["light_pos"], nom["light_pos"] + _v(cfg["pos_offset"]), atol=1e-12)
    np.testing.assert_allclose(got["light_dir"], nom["light_dir"], atol=1e-9)  # dir_angle 0
    np.testing.assert_allclose(got["light_diffuse"], np.clip(nom["light_diffuse"] + _v(cfg["diffuse_offset"]), 0, 1))
    np.testing.assert_allclose(got["light_ambient"], np.clip(nom["light_ambient"] + _v(cfg["ambient_offset"]), 0, 1))
    head = np.clip(nom["headlight"] + np.repeat([_v(cfg["diffuse_offset"]), _v(cfg["ambient_offset"])], 3), 0, 1)
    np.testing.assert_allclose(got["headlight"], head, atol=1e-6)
    assert got["light_diffuse"].sum() < nom["light_diffuse"].sum() and got["headlight"].sum() < nom["headlight"].sum()


def test_colours_and_textures(pair):
    nom, got = pair
    cfg = AX["appearance"]
    # geoms drawn in their material's colour are coloured through the material (randomization/appearance.py)
    plain = nom["geom_matid"] < 0
    assert plain.any() and (~plain).any()
    np.testing.assert_array_equal(got["geom_rgba"][~plain], nom["geom_rgba"][~plain])
    shifted = {"geom_rgba": got["geom_rgba"][plain], "mat_rgba": got["mat_rgba"]}
    for f, before in (("geom_rgba", nom["geom_rgba"][plain]), ("mat_rgba", nom["mat_rgba"])):
        np.testing.assert_allclose(shifted[f][:, :3], np.clip(before[:, :3] + _v(cfg["rgba_offset"]), 0, 1), atol=1e-6)
        np.testing.assert_array_equal(shifted[f][:, 3], before[:, 3])
    gain = _v(cfg["texture_gain"])
    assert np.abs(got["tex_data"].astype(float) - np.rint(nom["tex_data"] * gain)).max() <= 1  # 8-bit rounding
    assert got["tex_data"].astype(float).mean() < 0.75 * nom["tex_data"].astype(float).mean()


def test_camera_wider_and_miscalibrated(pair):
    nom, got = pair
    cfg = AX["camera"]
    np.testing.assert_allclose(got["cam_fovy"], nom["cam_fovy"] + _v(cfg["fovy_offset"]))
    np.testing.assert_allclose(got["cam_pos"], nom["cam_pos"] + np.asarray(cfg["pos_bias"]), atol=1e-12)
    bias = np.zeros(4)
    mujoco.mju_euler2Quat(bias, np.deg2rad(cfg["rot_bias_deg"]), "xyz")
    for q0, q in zip(nom["cam_quat"], got["cam_quat"]):
        want = np.zeros(4)
        mujoco.mju_mulQuat(want, q0, bias)  # the bias composes with the nominal orientation (camera frame)
        np.testing.assert_allclose(q, want, atol=1e-9)
        angle = 2 * np.degrees(np.arccos(min(1.0, abs(float(q @ q0)))))
        assert 1.0 < angle < 4.0  # about 2.7 degrees off nominal


def test_physics_slipperier_heavier_damped_softer(pair):
    nom, got = pair
    cfg = AX["physics"]
    assert cfg["friction_mode"] == "global"
    np.testing.assert_allclose(got["geom_friction"][:, 0], nom["geom_friction"][:, 0] * _v(cfg["friction"]))
    np.testing.assert_array_equal(got["geom_friction"][:, 1:], nom["geom_friction"][:, 1:])
    mass = _v(cfg["mass"])
    np.testing.assert_allclose(got["body_mass"][1:], nom["body_mass"][1:] * mass)  # every body but the world
    np.testing.assert_allclose(got["body_inertia"][1:], nom["body_inertia"][1:] * mass)
    np.testing.assert_allclose(got["body_subtreemass"], nom["body_subtreemass"] * mass, rtol=1e-9)  # recomputed
    np.testing.assert_allclose(got["dof_damping"], nom["dof_damping"] * _v(cfg["damping"]))
    kp = _v(cfg["kp"])
    np.testing.assert_allclose(got["actuator_gainprm"][:, 0], nom["actuator_gainprm"][:, 0] * kp)
    np.testing.assert_allclose(got["actuator_biasprm"][:, 1], -got["actuator_gainprm"][:, 0])  # still a position servo


def _ctrl_target(env) -> np.ndarray:
    return env.unwrapped.data.ctrl[:3].copy()


def test_action_latency_and_action_noise_reach_the_actuators():
    """One-step latency: the first command executes one step late (a zero hold first); nominal executes
    it at once. Action noise: with zero commands, the target moves by noise * MAX_EE_STEP per step."""
    sent = np.array([0.5, -0.5, 0.25, 1.0], np.float32)
    nominal, target = realgap.envs.make(ID), realgap.envs.make(ID, randomization=TARGET)
    try:
        nominal.reset(seed=SEED)
        home = _ctrl_target(nominal)
        nominal.step(sent)
        np.testing.assert_allclose(_ctrl_target(nominal) - home, sent[:3] * MAX_EE_STEP, atol=1e-9)
        assert nominal.unwrapped._closing

        target.reset(seed=SEED)
        np.testing.assert_array_equal(_ctrl_target(target), home)
        target.step(sent)
        np.testing.assert_array_equal(_ctrl_target(target), home)  # held: nothing executed yet
        assert not target.unwrapped._closing
        zero = np.zeros(4, np.float32)
        target.step(zero)  # executes `sent` (+ action noise)
        moved = (_ctrl_target(target) - home) / MAX_EE_STEP
        np.testing.assert_allclose(moved, sent[:3], atol=4 * AX["sensing"]["action_noise_std"])
        assert not np.allclose(moved, sent[:3], atol=1e-6) and target.unwrapped._closing
        noise = []
        for _ in range(60):
            before = _ctrl_target(target)
            target.step(zero)
            noise.append((_ctrl_target(target) - before) / MAX_EE_STEP)
        std = float(np.std(noise))
        assert 0.8 * AX["sensing"]["action_noise_std"] < std < 1.2 * AX["sensing"]["action_noise_std"]
        before = _ctrl_target(nominal)
        for _ in range(5):
            nominal.step(zero)
        np.testing.assert_array_equal(_ctrl_target(nominal), before)  # no noise without DR
    finally:
        nominal.close()
        target.close()


def test_observation_noise_has_the_target_std_and_spares_flags():
    env = realgap.envs.make(ID, randomization=TARGET)
    try:
        obs, _ = env.reset(seed=SEED)
        res = {"proprio": [], "object_state": []}
        for t in range(40):
            clean = env.unwrapped._observe()
            for k in res:
                res[k].append(np.asarray(obs[k], np.float64) - clean[k])
            obs, *_ = env.step(np.zeros(4, np.float32))
        rows = np.asarray(clean["object_state"]).reshape(-1, 6)
        r = np.asarray(res["object_state"]).reshape(40, -1, 6)
        present = rows[:, 0] == 1
        assert np.all(r[:, :, 0] == 0) and np.all(r[:, ~present] == 0)  # flags and absent rows exact
        sigma = AX["sensing"]["obs_noise_std"]
        for sample in (np.asarray(res["proprio"]), r[:, present, 1:]):
            assert 0.85 * sigma < np.std(sample) < 1.15 * sigma and abs(np.mean(sample)) < 0.2 * sigma
    finally:
        env.close()


def test_preplacement_puts_distractors_in_non_target_receptacles_at_the_declared_rate():
    env = realgap.envs.make(ID, randomization=TARGET)
    flips = placed = 0
    try:
        for seed in range(60):
            _, info = env.reset(seed=seed)
            task, pre = info["task"], info["dr_params"]["preplacement"]
            rows = env.unwrapped._object_state().reshape(-1, 6)
            flips += len(task["objects"]) - 1
            placed += len(pre)
            for name, where in pre.items():
                name, rec = name.replace("_", " "), where["receptacle"].replace("_", " ")
                assert name in task["objects"] and name != task["target_object"]
                assert rec in task["receptacles"] and rec != task["target_receptacle"]
                obj_xy, rec_xy = rows[ITEM_NAMES.index(name), 1:3], rows[ITEM_NAMES.index(rec), 1:3]
                assert np.linalg.norm(obj_xy - rec_xy) < 0.07  # it is in that receptacle after settling
    finally:
        env.close()
    assert abs(placed / flips - AX["preplacement"]["probability"]) < 0.1, (placed, flips)


def _episode(env, seed, steps=6):
    obs, info = env.reset(seed=seed)
    out = [obs]
    fields = _fields(env)
    for t in range(steps):
        obs, *_ = env.step(np.array([0.3, -0.2, 0.1 * (t % 3 - 1), 1.0], np.float32))
        out.append(obs)
    return fields, out, info["dr_params"]


def _same_obs(a, b) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in ("proprio", "object_state"))


def test_same_seed_same_episode_and_the_domain_is_fixed_across_seeds():
    a_env, b_env = realgap.envs.make(ID, randomization=TARGET), realgap.envs.make(ID, randomization=TARGET)
    try:
        fa, oa, pa = _episode(a_env, SEED)
        _episode(a_env, SEED + 1)  # an episode in between changes nothing
        for again in (_episode(a_env, SEED), _episode(b_env, SEED)):
            fb, ob, pb = again
            assert pa == pb and _same_obs(oa, ob)
            assert all(np.array_equal(fa[k], fb[k]) for k in fa)
        fc, oc, pc = _episode(b_env, SEED + 1)
        assert all(np.array_equal(fa[k], fc[k]) for k in fa)  # fixed domain: same model for any seed
        assert pc["sensing"] == pa["sensing"] and pc["physics"] == pa["physics"]
        assert not _same_obs(oa, oc)  # other task, other per-step noise
    finally:
        a_env.close()
        b_env.close()


def test_the_rendered_view_changes_and_is_reproducible():
    kw = {"obs_mode": "state+image", "image_size": 48}
    nominal, target = realgap.envs.make(ID, **kw), realgap.envs.make(ID, randomization=TARGET, **kw)
    try:
        ref = nominal.reset(seed=SEED)[0]["image_front"].astype(int)
        one = target.reset(seed=SEED)[0]["image_front"].astype(int)
        two = target.reset(seed=SEED)[0]["image_front"].astype(int)
        back = nominal.reset(seed=SEED)[0]["image_front"].astype(int)
    finally:
        nominal.close()
        target.close()
    assert np.array_equal(one, two) and np.array_equal(ref, back)
    assert np.abs(one - ref).mean() > 5
