"""The generic DomainRandomization wrapper on Gymnasium's own MuJoCo models (hopper, ant, pendulum).

``gymnasium.envs.mujoco`` imports imageio (not a realgap dependency), so the env here is a minimal
MujocoEnv look-alike that loads gymnasium's shipped MJCF files and exposes ``model``/``data``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: the render test needs EGL

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from realgap.errors import RealgapError  # noqa: E402
from realgap.randomization import DomainRandomization  # noqa: E402

ASSETS = Path(importlib.util.find_spec("gymnasium").origin).parent / "envs" / "mujoco" / "assets"
CONF = Path(__file__).resolve().parents[1] / "realgap" / "conf" / "randomization"


class TinyMujocoEnv(gym.Env):
    """Like gymnasium's MujocoEnv: reset noise from ``np_random``, obs = (qpos, qvel), action = ctrl."""

    def __init__(self, xml: str, frame_skip: int = 2):
        self.model = mujoco.MjModel.from_xml_path(str(ASSETS / xml))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = frame_skip
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        size = self.model.nq + self.model.nv
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)

    def _observe(self):
        return np.concatenate([self.data.qpos, self.data.qvel])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self.model.qpos0 + self.np_random.uniform(-0.005, 0.005, self.model.nq)
        mujoco.mj_forward(self.model, self.data)
        return self._observe(), {}

    def step(self, action):
        self.data.ctrl[:] = action
        for _ in range(self.frame_skip):
            mujoco.mj_step(self.model, self.data)
        return self._observe(), 0.0, False, False, {}


class TinyMujocoEnvWithObs(TinyMujocoEnv):
    _get_obs = TinyMujocoEnv._observe  # what gymnasium's MujocoEnv subclasses provide


def cfg(name="default", **axes):
    c = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    for axis, changes in axes.items():
        c["axes"][axis].update(changes)
    return c


def quiet_wrap(env, c, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DomainRandomization(env, c, **kw)


def test_hopper_reports_missing_targets_at_construction_and_randomizes_the_rest():
    env = TinyMujocoEnvWithObs("hopper.xml")
    with pytest.warns(UserWarning) as record:
        wrapped = DomainRandomization(env, cfg())
    messages = [str(w.message) for w in record]
    assert any("randomization.axes.placement: inapplicable to TinyMujocoEnvWithObs" in m and "free-joint" in m for m in messages)
    assert any("randomization.axes.preplacement" in m and "receptacle" in m for m in messages)
    assert set(wrapped.inapplicable_axes) == {"placement", "preplacement"}

    mass0, fovy0 = env.model.body_mass.copy(), env.model.cam_fovy.copy()
    obs, info = wrapped.reset(seed=3)
    params = info["dr_params"]
    assert {"lighting", "appearance", "camera", "physics", "sensing"} <= set(params)
    assert not np.array_equal(env.model.body_mass, mass0)
    assert not np.array_equal(env.model.cam_fovy, fovy0)
    assert params["camera"]["track"]["fovy"] == pytest.approx(float(env.model.cam_fovy[0]))
    obs2, info2 = wrapped.reset(seed=3)
    assert info2["dr_params"] == params and np.array_equal(obs, obs2)  # reproducible per seed
    _, info3 = wrapped.reset(seed=4)
    assert info3["dr_params"]["physics"] != params["physics"]
    for _ in range(3):
        obs, *_ = wrapped.step(wrapped.action_space.sample())
    assert obs.shape == env.observation_space.shape


def test_strict_raises_naming_the_missing_axis():
    with pytest.raises(RealgapError, match=r"randomization.axes.camera: inapplicable.*no named camera"):
        DomainRandomization(TinyMujocoEnvWithObs("inverted_pendulum.xml"), cfg(placement={"enabled": False},
                                                                                  preplacement={"enabled": False}),
                            strict=True)


def test_placement_needs_get_obs_on_a_foreign_env():
    with pytest.warns(UserWarning, match=r"axes.placement: inapplicable.*_get_obs"):
        wrapped = DomainRandomization(TinyMujocoEnv("ant.xml"), cfg(preplacement={"enabled": False}))
    assert "placement" in wrapped.inapplicable_axes


def test_ant_torso_placement_moves_the_free_joint_and_the_observation_follows():
    env = TinyMujocoEnvWithObs("ant.xml")
    base = quiet_wrap(TinyMujocoEnvWithObs("ant.xml"), cfg("nominal"))
    wrapped = quiet_wrap(env, cfg(placement={"object_xy": [0.2, 0.3], "object_yaw": [0.5, 0.6], "min_separation": 0.0}))
    assert "placement" not in wrapped.inapplicable_axes
    obs0, _ = base.reset(seed=5)
    obs, info = wrapped.reset(seed=5)
    dxy = np.array(info["dr_params"]["placement"]["objects"]["torso"]["dxy"])
    assert np.all((dxy >= 0.2) & (dxy <= 0.3))
    np.testing.assert_allclose(obs[:2] - obs0[:2], dxy, atol=0.02)  # sensing noise is tiny
    np.testing.assert_allclose(env.data.qpos[:2] - obs0[:2], dxy, atol=1e-9)


def test_latency_delays_the_applied_control_by_n_steps():
    env = TinyMujocoEnvWithObs("inverted_pendulum.xml")
    wrapped = quiet_wrap(env, cfg("nominal", sensing={"enabled": True, "latency_steps": [2, 2]}))
    _, info = wrapped.reset(seed=0)
    assert info["dr_params"]["sensing"]["latency_steps"] == 2
    sent = [np.array([0.1 * (t + 1)], np.float32) for t in range(6)]
    applied = []
    for a in sent:
        wrapped.step(a)
        applied.append(env.data.ctrl.copy())
    assert np.array_equal(applied[0], [0.0]) and np.array_equal(applied[1], [0.0])
    for t in range(2, 6):
        np.testing.assert_array_equal(applied[t], sent[t - 2])


def test_env_without_mujoco_is_rejected():
    with pytest.raises(RealgapError, match="exposes no MuJoCo model/data"):
        DomainRandomization(gym.make("CartPole-v1"), cfg())


def test_realgap_env_gets_its_dr_through_the_same_wrapper():
    """One DR path: realgap's env has no randomizer of its own; envs.make wraps it like any env, and
    placement lands on the env's nominal layout (through its layout hook) before the scene settles."""
    import inspect

    import realgap.envs as envs
    from realgap.envs.catalogue import ITEM_NAMES, body_name
    from realgap.envs.place_env import PlaceInReceptacleEnv

    assert "randomization" not in inspect.signature(PlaceInReceptacleEnv).parameters
    c = cfg("nominal", placement={"enabled": True, "object_xy": [0.02, 0.03], "object_yaw": [0.0, 0.0],
                                  "receptacle_xy": [0.0, 0.0], "receptacle_yaw": [0.0, 0.0], "min_separation": 0.0})
    env = envs.make("realgap/PlaceInReceptacle-v0", randomization=c)
    assert isinstance(env, DomainRandomization) and not env.inapplicable_axes
    assert env.unwrapped.dr_layout_hook is not None
    nominal, _ = envs.make("realgap/PlaceInReceptacle-v0").reset(seed=7)
    obs, info = env.reset(seed=7)
    moved = info["dr_params"]["placement"]["objects"]
    assert set(moved) == {body_name(o) for o in info["task"]["objects"]}
    rows0, rows = nominal["object_state"].reshape(len(ITEM_NAMES), 6), obs["object_state"].reshape(len(ITEM_NAMES), 6)
    for k, name in enumerate(ITEM_NAMES):
        if body_name(name) in moved:
            np.testing.assert_allclose(rows[k, 1:3] - rows0[k, 1:3], moved[body_name(name)]["dxy"], atol=2e-3)
            assert abs(rows[k, 3] - rows0[k, 3]) < 1e-3  # settled on the table like the nominal layout
    again, info2 = env.reset(seed=7)
    assert info2["dr_params"] == info["dr_params"] and np.array_equal(again["object_state"], obs["object_state"])
