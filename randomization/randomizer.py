"""``Randomizer``: validates a DR config and drives the axes for an env.

How the env uses it (see ``scene.py`` for the ``SceneInfo`` contract)::

    dr = Randomizer(cfg.randomization)            # validates; bad input -> one-line RealgapError
    dr.bind(model, scene)                         # once: resolve targets, cache nominal values
    # every episode, with its episode seed:
    info["dr_params"] = dr.reset_model(model, seed)   # restore nominal exactly, then model axes
    dr.upload_textures(model, renderer)                   # only if rendering (pushes tex_data to the GPU)
    mujoco.mj_resetData(model, data); <write nominal layout>
    info["dr_params"] |= dr.reset_state(model, data, seed, scene)   # placement, pre-placement; mj_forward
    channel = dr.sensing(seed)                        # obs = channel.observe(obs); a = channel.act(a)
    info["dr_params"] |= {"sensing": channel.params}

Each axis draws only from ``realgap.seeding.stream(seed, axis_name)`` and writes only the model
fields it declares in ``FIELDS``; all parameters returned are plain JSON (floats, lists, dicts).
"""

from __future__ import annotations

import warnings

import mujoco
import numpy as np

from realgap.errors import RealgapError
from realgap.seeding import stream

from . import appearance, camera, lighting, physics, placement, preplacement, sensing
from .config import effective, validate
from .scene import SceneInfo
from .sensing import SensingChannel

AXES = {m.NAME: m for m in (lighting, appearance, camera, placement, preplacement, physics, sensing)}
MODEL_AXES = ("lighting", "appearance", "camera", "physics")  # applied in reset_model
STATE_AXES = ("placement", "preplacement")  # applied in reset_state
AXIS_PARAMS = {name: m.PARAMS for name, m in AXES.items()}


def get_field(model, field: str) -> np.ndarray:
    obj = model
    for part in field.split("."):
        obj = getattr(obj, part)
    return obj


def set_field(model, field: str, value: np.ndarray) -> None:
    get_field(model, field)[...] = value


class Randomizer:
    def __init__(self, cfg, strict: bool | None = None):
        self.cfg = validate(cfg, AXIS_PARAMS)
        self.strict = self.cfg["strict"] if strict is None else strict
        self.scale = self.cfg["scale"]
        self.enabled = [n for n in AXES if self.cfg["axes"][n]["enabled"]]
        self.settings = {n: effective(self.cfg["axes"][n], AXES[n].PARAMS, self.scale) for n in AXES}
        self.targets: dict[str, dict] = {}
        self.inapplicable_axes: dict[str, str] = {}
        self.nominal: dict[str, np.ndarray] = {}
        self._textures_to_upload: list[int] = []
        self.presence_rows: dict[str, int] = {}
        self._bound = False

    @property
    def name(self) -> str:
        return self.cfg["name"]

    def bind(self, model, scene: SceneInfo | None = None) -> "Randomizer":
        """Resolve each enabled axis's targets and cache the nominal value of every field it writes.

        An enabled axis that finds nothing to change is reported (``warnings.warn`` + listed in
        ``inapplicable_axes``), or raises a ``RealgapError`` when ``strict``. Never silently a no-op.
        """
        self.targets, self.inapplicable_axes = {}, {}
        for name in self.enabled:
            if name == "sensing":
                continue
            targets, missing = AXES[name].bind(model, scene, self.settings[name])
            if missing:
                self.inapplicable_axes[name] = missing
            else:
                self.targets[name] = targets
        for name, why in self.inapplicable_axes.items():
            msg = f"randomization.axes.{name}: inapplicable to this model: {why}"
            if self.strict:
                raise RealgapError(msg)
            warnings.warn(msg, stacklevel=2)
        self.nominal = {f: get_field(model, f).copy() for n in self.targets for f in AXES[n].FIELDS}
        self._textures_to_upload = list(self.targets.get("appearance", {}).get("textures", []))
        self.presence_rows = dict(scene.presence_rows) if scene is not None else {}
        self._bound = True
        return self

    def restore(self, model) -> None:
        """Write back the nominal value of every field an axis may have changed (bit-identical)."""
        for f, value in self.nominal.items():
            set_field(model, f, value)

    def reset_model(self, model, episode_seed: int) -> dict:
        """Restore nominal exactly, then apply the model-field axes for this episode."""
        self._check_bound()
        self.restore(model)
        return {n: AXES[n].apply(model, self.targets[n], self.settings[n], stream(episode_seed, n))
                for n in MODEL_AXES if n in self.targets}

    def reset_state(self, model, data, episode_seed: int, scene: SceneInfo | None = None) -> dict:
        """Placement then pre-placement, on top of the env's nominal layout; ends with ``mj_forward``."""
        self._check_bound()
        params = {}
        for n in STATE_AXES:
            if n in self.targets:
                params[n] = AXES[n].apply_state(model, data, self.targets[n], scene, self.settings[n],
                                                stream(episode_seed, n))
                mujoco.mj_kinematics(model, data)
        mujoco.mj_forward(model, data)
        return params

    def sensing(self, episode_seed: int, low=-1.0, high=1.0) -> SensingChannel:
        """The episode's observation/action channel (identity when the axis is off)."""
        on = "sensing" in self.enabled
        return SensingChannel(episode_seed, self.settings["sensing"] if on else None, low, high, self.presence_rows)

    def upload_textures(self, model, renderer) -> None:
        """Push randomized textures to a ``mujoco.Renderer`` (or an ``MjrContext``) after ``reset_model``."""
        if not self._textures_to_upload or renderer is None:
            return
        context = getattr(renderer, "_mjr_context", renderer)
        gl = getattr(renderer, "_gl_context", None)
        if gl is not None:
            gl.make_current()
        for t in self._textures_to_upload:
            mujoco.mjr_uploadTexture(model, context, t)

    def _check_bound(self) -> None:
        if not self._bound:
            raise RuntimeError("Randomizer.bind(model, scene) must be called before resetting")
