"""``DomainRandomization``: the realgap DR axes around any Gymnasium MuJoCo env -- realgap's own too.

Works with any env whose ``unwrapped`` exposes a MuJoCo ``model`` and ``data`` (gymnasium's
``Hopper-v5``, ``Ant-v5``, ..., or your own). Targets are chosen by the name patterns in the config.
Axes that find nothing to change in the model (no named camera, no free joint, no receptacles)
are reported at construction: a warning naming the axis and what is missing, listed in
``wrapper.inapplicable_axes``; with ``strict=True`` they raise ``RealgapError`` instead.

Per episode: ``reset_model`` before the inner reset (physics, looks), placement / pre-placement on
the env's fresh layout, and the sensing channel around ``step``. ``info["dr_params"]`` holds
everything applied. The episode seed is ``reset(seed=...)``'s seed; unseeded resets continue from
the last one (+1 each).

Optional hooks an env may offer on its ``unwrapped`` (realgap's ``PlaceInReceptacleEnv`` offers all):

- ``dr_scene(episode: bool) -> SceneInfo``: what DR may touch (``episode=False``: at bind, every
  item; ``True``: this episode's items). Without it the ``scene`` argument (or None) is used.
- ``dr_layout_hook``: an attribute the wrapper sets to ``fn(env)``; the env calls it in ``reset``
  right after writing its nominal layout and before it settles/observes. Without it, placement
  runs after the inner reset and the observation is rebuilt with the env's ``_get_obs()``.
- ``mujoco_renderers()``: the env's ``mujoco.Renderer`` objects, which get the randomized textures
  after every ``reset_model`` (gymnasium's own ``mujoco_renderer`` viewers are found by themselves).
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
        self._scene_hook = getattr(inner, "dr_scene", None)
        self.scene = scene if scene is not None or self._scene_hook is None else self._scene_hook(episode=False)
        with warnings.catch_warnings():  # re-issued below, naming the env
            warnings.simplefilter("ignore")
            self.randomizer.bind(self.model, self.scene)
        self.inapplicable_axes = dict(self.randomizer.inapplicable_axes)
        self._layout_hook = hasattr(inner, "dr_layout_hook")
        # Moving bodies after the inner reset needs the env to rebuild its observation.
        for name in STATE_AXES:
            if name in self.randomizer.targets and not self._layout_hook and not hasattr(inner, "_get_obs"):
                self.randomizer.targets.pop(name)
                self.inapplicable_axes[name] = "env has no _get_obs() to rebuild the observation after moving bodies"
                if self.randomizer.strict:
                    raise RealgapError(f"randomization.axes.{name}: inapplicable to this env: {self.inapplicable_axes[name]}")
        for name, why in self.inapplicable_axes.items():
            warnings.warn(f"randomization.axes.{name}: inapplicable to {type(inner).__name__}: {why}", stacklevel=2)
        self._moves_bodies = any(n in self.randomizer.targets for n in STATE_AXES)
        if self._layout_hook:
            inner.dr_layout_hook = self._on_layout if self._moves_bodies else None
        space = env.action_space
        self._low, self._high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (-np.inf, np.inf)
        self._next_seed = 0
        self._episode_seed = 0
        self._state_params: dict = {}
        self.channel = self.randomizer.sensing(0, self._low, self._high)

    def _current_scene(self) -> SceneInfo | None:
        return self._scene_hook(episode=True) if self._scene_hook is not None else self.scene

    def _on_layout(self, inner) -> None:
        """Called by the env inside its reset, on its nominal layout (the ``dr_layout_hook``)."""
        self._state_params = self.randomizer.reset_state(self.model, self.data, self._episode_seed, self._current_scene())

    def reset(self, *, seed: int | None = None, options=None):
        episode_seed = self._next_seed if seed is None else int(seed)
        self._next_seed, self._episode_seed, self._state_params = episode_seed + 1, episode_seed, {}
        params = self.randomizer.reset_model(self.model, episode_seed)
        self._upload_textures()
        obs, info = self.env.reset(seed=seed, options=options)
        if self._moves_bodies:
            if self._layout_hook:  # the env already called _on_layout during its reset
                params |= self._state_params
            else:
                params |= self.randomizer.reset_state(self.model, self.data, episode_seed, self._current_scene())
                obs = self.env.unwrapped._get_obs()
        self.channel = self.randomizer.sensing(episode_seed, self._low, self._high)
        info = dict(info, dr_params=params | {"sensing": self.channel.params}, episode_seed=episode_seed)
        return self.channel.observe(obs), info

    def step(self, action):
        action = np.asarray(action)
        if action.dtype.kind == "f":  # add the action noise at full precision (MuJoCo's ctrl is float64)
            action = action.astype(np.float64)
        obs, reward, terminated, truncated, info = self.env.step(self.channel.act(action))
        return self.channel.observe(obs), reward, terminated, truncated, info

    def _upload_textures(self) -> None:
        """Renderers keep their own GPU copy of the textures; refresh it after ``reset_model``."""
        inner = self.env.unwrapped
        for renderer in getattr(inner, "mujoco_renderers", lambda: [])():
            self.randomizer.upload_textures(self.model, renderer)
        viewers = getattr(getattr(inner, "mujoco_renderer", None), "_viewers", {})  # gymnasium's MujocoEnv
        for viewer in viewers.values():
            if hasattr(viewer, "con"):
                if hasattr(viewer, "opengl_context"):
                    viewer.opengl_context.make_current()
                self.randomizer.upload_textures(self.model, viewer.con)
