"""The env's speed-ups change nothing it returns:
- physics in one ``mj_step(nstep=N)`` call is bit-identical to stepping one substep at a time and
  stopping at the first instability warning (the loop it replaced);
- hiding the geoms of absent (parked) items from the renderer leaves every frame pixel-identical."""

import pathlib

import mujoco
import numpy as np

import realgap.envs as envs
from realgap.envs import place_env
from realgap.envs import scene as S
from realgap.envs.catalogue import OBJECT_NAMES
from realgap.seeding import stream
from omegaconf import OmegaConf

CONF = pathlib.Path(__file__).resolve().parents[1] / "realgap" / "conf"


def _singly(self) -> None:  # the replaced loop, kept here as the reference
    for _ in range(S.N_SUBSTEPS):
        mujoco.mj_step(self.model, self.data)
        if any(self.data.warning[code].number for code in place_env.UNSTABLE_WARNINGS):
            break


def _run(env, actions, seed, destabilize=None):
    obs, _ = env.reset(seed=seed)
    if destabilize:
        destabilize(env.unwrapped)
    trace = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated, truncated, info, env.unwrapped.data.qpos.copy(),
                      env.unwrapped.data.warning.number.copy()))
        if terminated or truncated:
            break
    return trace


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    return a == b


def _compare(monkeypatch, destabilize=None, seeds=(0, 1, 2), n=40):
    actions = stream(0, "test_substeps").uniform(-1, 1, (n, 4)).astype(np.float32)
    fast = [_run(envs.make("realgap/PlaceInReceptacle-v0"), actions, s, destabilize) for s in seeds]
    with monkeypatch.context() as mp:
        mp.setattr(place_env.PlaceInReceptacleEnv, "_substeps", _singly)
        slow = [_run(envs.make("realgap/PlaceInReceptacle-v0"), actions, s, destabilize) for s in seeds]
    return fast, slow


def test_one_call_equals_singly_stepped(monkeypatch):
    fast, slow = _compare(monkeypatch)
    assert all(len(t) == 41 for t in fast)  # random actions: no episode ended early
    assert _same(fast, slow)


def test_instability_stops_at_the_same_substep(monkeypatch):
    def destabilize(u):  # the target object shoots up; its speed passes MuJoCo's limit mid-block (substep ~26)
        i = OBJECT_NAMES.index(u.task.target_object)
        u.model.opt.gravity[:] = (0.0, 0.0, 1e9)
        u.data.qvel[u._obj_vadr[i] + 2] = 1e10 - 5e7

    fast, slow = _compare(monkeypatch, destabilize, seeds=(0, 1))
    reasons = [t[-1][4].get("termination_reason", "") for t in fast]
    assert all(r.startswith("unstable: bad qvel") for r in reasons), reasons
    assert all(len(t) == 2 for t in fast)  # ended on the first step
    assert _same(fast, slow)


def test_hiding_absent_items_leaves_frames_identical(monkeypatch):
    dr = OmegaConf.to_container(OmegaConf.load(CONF / "randomization" / "default.yaml"))  # camera, lighting, ...
    actions = stream(0, "test_render").uniform(-1, 1, (4, 4)).astype(np.float32)
    kwargs = dict(obs_mode="image", image_size=64, cameras=("front", "wrist"))

    def frames(randomization):
        env = envs.make("realgap/PlaceInReceptacle-v0", randomization=randomization, **kwargs)
        out = []
        for seed in (0, 1, 2):
            obs, _ = env.reset(seed=seed)
            out.append(obs)
            for a in actions:
                out.append(env.step(a)[0])
        hidden = int((env.unwrapped.model.geom_group == place_env.HIDDEN_GEOM_GROUP).sum())
        env.close()
        return [{k: v for k, v in o.items() if k.startswith("image_")} for o in out], hidden

    for randomization in (None, dr):
        fast, hidden = frames(randomization)
        with monkeypatch.context() as mp:
            mp.setattr(place_env.PlaceInReceptacleEnv, "_hide_absent_items", lambda self, task: None)
            slow, none_hidden = frames(randomization)
        assert hidden > 0 and none_hidden == 0
        assert len(fast) == 15 and _same(fast, slow)
