"""A tiny env and policies for the evaluation-harness tests (imported by spawned/Ray workers too).

``test_eval_fakes:FakeReach-v0``: move a point to a seeded goal in 3-D; success within 0.15, timeout
after ``max_steps``. It is a foreign env (no MuJoCo, so no realgap DR): its conditions differ by env
kwargs. ``noise=s`` perturbs the dynamics from the episode's own stream; ``explode_seed=k`` makes
episode k report an unstable sim. Frames: ``image_<cam>`` observations (``obs_mode`` with "image")
or ``render()`` with ``render_mode="rgb_array"``.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from realgap import seeding


class FakeReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, obs_mode="state", noise=0.0, explode_seed=None, max_steps=10, step_sleep=0.0, image_size=8,
                 cameras=("front",), render_mode=None):
        self.rand = {"noise": noise, "explode_seed": explode_seed}
        self.max_steps, self.step_sleep = max_steps, step_sleep
        self.render_mode, self.image_size = render_mode, image_size
        self.images = "image" in obs_mode
        obs = {
            "proprio": spaces.Box(-10, 10, (8,), np.float32),
            "object_state": spaces.Box(-10, 10, (6,), np.float32),
        }
        if self.images:
            for cam in cameras:
                obs[f"image_{cam}"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1, 1, (4,), np.float32)

    def _obs(self):
        obs = {
            "proprio": np.concatenate([self.pos, np.zeros(5)]).astype(np.float32),
            "object_state": np.array([1, *self.goal, 1, 0], np.float32),
        }
        for key, space in self.observation_space.spaces.items():
            if key.startswith("image_"):
                obs[key] = self._picture()
        return obs

    def _picture(self):
        level = int(np.clip(128 + 60 * self.pos[0], 0, 255))
        return np.full((self.image_size, self.image_size, 3), level, np.uint8)

    def render(self):
        return self._picture() if self.render_mode == "rgb_array" else None

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_ = int(seed)
        self.goal = seeding.stream(self.seed_, "fake_env.goal").uniform(-1, 1, 3)
        self.noise = seeding.stream(self.seed_, "fake_env.dr")
        self.pos, self.t = np.zeros(3), 0
        dr = {"noise": float(self.rand.get("noise", 0.0))}
        return self._obs(), {"task": {"goal": self.goal.tolist()}, "dr_params": dr}

    def step(self, action):
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.t += 1
        drift = self.noise.normal(0, 1, 3) * float(self.rand.get("noise", 0.0))
        self.pos = self.pos + 0.25 * np.asarray(action[:3], float) + drift
        success = bool(np.linalg.norm(self.pos - self.goal) < 0.15)
        unstable = self.rand.get("explode_seed") == self.seed_ and self.t == 2
        success = success and not unstable
        terminated = success or unstable
        truncated = self.t >= self.max_steps and not terminated
        reason = "success" if success else "unstable" if unstable else "timeout" if truncated else ""
        info = {"is_success": success, "termination_reason": reason} if terminated or truncated else {}
        return self._obs(), float(success), terminated, truncated, info


gym.register("FakeReach-v0", entry_point=FakeReachEnv)


class GoalSeeker:
    """Heads for the goal with seeded noise; per-slot randomness comes from the episode seed only."""

    def __init__(self, noise=0.8, fail_seed=None, nan_seed=None, big_seed=None, action_dim=4):
        self.noise, self.fail_seed, self.nan_seed, self.n_out = noise, fail_seed, nan_seed, action_dim
        self.big_seed = big_seed  # this seed's second action is 1e6 (far outside the action space)

    def reset(self, episode_seeds):
        self.seeds = list(episode_seeds)
        self.rngs = [seeding.stream(s, "fake_policy") for s in self.seeds]
        self.t = [0] * len(self.seeds)

    def act(self, obs, slots):
        out = np.zeros((len(slots), self.n_out), np.float32)
        for j, i in enumerate(slots):
            goal, pos = obs[j]["object_state"][1:4], obs[j]["proprio"][:3]
            step = np.clip((goal - pos) / 0.25, -1, 1) + self.rngs[i].normal(0, self.noise, 3)
            out[j, :3] = np.clip(step, -1, 1)[: self.n_out]
            if self.seeds[i] == self.fail_seed and self.t[i] == 2:
                raise RuntimeError(f"policy blew up on seed {self.fail_seed}")
            if self.seeds[i] == self.nan_seed and self.t[i] == 1:
                out[j] = np.nan
            if self.seeds[i] == self.big_seed and self.t[i] == 1:
                out[j, 0] = 1e6
            self.t[i] += 1
        return out


def make_policy(**kwargs):
    return GoalSeeker(**kwargs)


class ThreadProbe(GoalSeeker):
    """GoalSeeker that records the torch thread count it runs under (one value per act() call)."""

    seen: list = []

    def act(self, obs, slots):
        import torch

        ThreadProbe.seen.append(torch.get_num_threads())
        return super().act(obs, slots)


def make_thread_probe():
    return ThreadProbe()


def make_wrong_shape_policy():
    return GoalSeeker(action_dim=7)


class Idle:
    """Never moves (zeros), so every episode runs until the env's time limit."""

    def reset(self, episode_seeds):
        pass

    def act(self, obs, slots):
        return np.zeros((len(slots), 4), np.float32)


def make_idle_policy():
    return Idle()


# ------------------------------------------------------------------ suite helpers for the tests
FAKE_CONDITIONS = "{nominal:{randomization:null},noisy:{env_kwargs:{noise:0.05}},explode:{env_kwargs:{explode_seed:100003}}}"


def fake_suite_args(out, *extra, n=12, batch=4, env_kwargs="{obs_mode:state}", policy_kwargs="{}", frames="none"):
    """CLI arguments for ``realgap suite`` on the fake env (Hydra overrides of the default suite)."""
    return [
        "suite", f"out={out}",
        "suite.policy.spec=test_eval_fakes:make_policy", "~suite.policy.kwargs", f"+suite.policy.kwargs={policy_kwargs}",
        "suite.env.id=test_eval_fakes:FakeReach-v0", "~suite.env.kwargs", f"+suite.env.kwargs={env_kwargs}",
        "~suite.conditions", f"+suite.conditions={FAKE_CONDITIONS}",
        f"suite.seeds.n={n}", f"suite.batch_envs={batch}", f"suite.record_frames={frames}",
        "report.videos_per_condition=1", "report.bootstrap_n=500", *extra,
    ]


def episodes_by_key(out):
    """{(condition, seed): (info without timing, step arrays)} of a suite output."""
    from pathlib import Path

    from realgap.data.replay_buffer import ReplayBuffer

    store = ReplayBuffer.open(Path(out) / "episodes.zarr")
    result = {}
    for i, info in enumerate(store.episode_infos()):
        key = (info["condition"], info["seed"])
        assert key not in result, f"duplicate episode {key}"
        info = {k: v for k, v in info.items() if k != "wall_time_s"}
        result[key] = (info, store.episode(i))
    return result


def assert_same_episodes(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key][0] == b[key][0], key
        assert sorted(a[key][1]) == sorted(b[key][1]), key
        for k in a[key][1]:
            np.testing.assert_array_equal(a[key][1][k], b[key][1][k], err_msg=f"{key} {k}")
