"""``DomainRandomization``: the realgap DR axes around any Gymnasium MuJoCo env.

Works with any env whose ``unwrapped`` exposes a MuJoCo ``model`` and ``data`` (gymnasium's
``Hopper-v5``, ``Ant-v5``, ..., or your own). Targets are chosen by the name patterns in the config.
Axes that find nothing to change in the model (no named camera, no free joint, no receptacles)
are reported at construction: a warning naming the axis and what is missing, listed in
``wrapper.inapplicable_axes``; with ``strict=True`` they raise ``RealgapError`` instead.

Per episode: ``reset_model`` before the inner reset (physics, looks), placement after it (then the
observation is rebuilt with the env's ``_get_obs``), and the sensing channel around ``step``.
``info["dr_params"]`` holds everything applied. The episode seed is ``reset(seed=...)``'s seed;
unseeded resets continue from the last one (+1 each).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import mujoco
import numpy as np

from realgap.errors import RealgapError

from .randomizer import STATE_AXES, Randomizer
from .scene import SceneInfo


class DomainRandomization(gym.Wrapper):
    def __init__(self, env: gym.Env, cfg, strict: bool | None = None, scene: SceneInfo | None = None):
        super().__init__(env)
        inner = env.unwrapped
        self.model, self.data = getattr(inner, "model", None), getattr(inner, "data", None)
        if not isinstance(self.model, mujoco.MjModel) or not isinstance(self.data, mujoco.MjData):
            raise RealgapError(f"env {type(inner).__name__}: unwrapped env exposes no MuJoCo model/data")
        self.randomizer = Randomizer(cfg, strict)
        self.scene = scene
        with warnings.catch_warnings():  # re-issued below, naming the env
            warnings.simplefilter("ignore")
            self.randomizer.bind(self.model, scene)
        self.inapplicable_axes = dict(self.randomizer.inapplicable_axes)
        # Moving bodies after the inner reset needs the env to rebuild its observation.
        for name in STATE_AXES:
            if name in self.randomizer.targets and not hasattr(inner, "_get_obs"):
                self.randomizer.targets.pop(name)
                self.inapplicable_axes[name] = "env has no _get_obs() to rebuild the observation after moving bodies"
                if self.randomizer.strict:
                    raise RealgapError(f"randomization.axes.{name}: inapplicable to this env: {self.inapplicable_axes[name]}")
        for name, why in self.inapplicable_axes.items():
            warnings.warn(f"randomization.axes.{name}: inapplicable to {type(inner).__name__}: {why}", stacklevel=2)
        space = env.action_space
        self._low, self._high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (-np.inf, np.inf)
        self._next_seed = 0
        self.channel = self.randomizer.sensing(0, self._low, self._high)

    def reset(self, *, seed: int | None = None, options=None):
        episode_seed = self._next_seed if seed is None else int(seed)
        self._next_seed = episode_seed + 1
        params = self.randomizer.reset_model(self.model, episode_seed)
        self._upload_textures()
        obs, info = self.env.reset(seed=seed, options=options)
        if any(n in self.randomizer.targets for n in STATE_AXES):
            params |= self.randomizer.reset_state(self.model, self.data, episode_seed, self.scene)
            obs = self.env.unwrapped._get_obs()
        self.channel = self.randomizer.sensing(episode_seed, self._low, self._high)
        info = dict(info, dr_params=params | {"sensing": self.channel.params}, episode_seed=episode_seed)
        return self.channel.observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.channel.act(action))
        return self.channel.observe(obs), reward, terminated, truncated, info

    def _upload_textures(self) -> None:
        """Gymnasium's viewers keep their own GPU copy of the textures; refresh it after reset_model."""
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        for viewer in getattr(renderer, "_viewers", {}).values():
            if hasattr(viewer, "con"):
                if hasattr(viewer, "opengl_context"):
                    viewer.opengl_context.make_current()
                self.randomizer.upload_textures(self.model, viewer.con)
