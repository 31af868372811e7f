"""Validation of a ``conf/randomization/*.yaml`` config and the range arithmetic shared by the axes.

A config is ``{name, scale, strict, axes: {<axis>: {enabled, <param>: ...}}}``. Each axis module
declares ``PARAMS = {key: (kind, default)}``; the defaults are nominal (the axis changes nothing).
Kinds and what the global ``scale`` does to them:

- ``offset`` ``[lo, hi]`` additive about nominal 0: scaled to ``[lo*s, hi*s]``.
- ``factor`` ``[lo, hi]`` multiplicative about nominal 1: scaled to ``[1+(lo-1)s, 1+(hi-1)s]``;
  must stay >= 0 (a mass or friction factor may never be negative).
- ``prob`` probability, scaled to ``min(1, p*s)``.
- ``std`` a standard deviation >= 0, scaled to ``std*s``.
- ``steps`` ``[lo, hi]`` integer control steps >= 0, scaled and rounded.
- ``vec3`` a fixed bias (target-domain effects); not a range, so not scaled.
- ``regex`` a name pattern choosing targets; ``bool`` a switch; ``int`` a count >= 1;
  ``choice:a|b|c`` one of the listed words (not scaled).

Every axis draws the same number of variates whatever the scale (a draw is ``lo + u*(hi-lo)``), so
rescaling one axis never shifts its own stream, and axes never share a stream.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from realgap.errors import RealgapError

PREFIX = "randomization"
TOP_KEYS = {"name": "nominal", "scale": 1.0, "strict": False, "axes": {}}


def to_plain(cfg: Any) -> dict:
    """DictConfig / dict / None -> plain dict (Hydra nodes are converted, not mutated)."""
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra is a hard dependency
        pass
    if not isinstance(cfg, dict):
        raise RealgapError(f"{PREFIX}: expected a mapping, got {type(cfg).__name__}")
    return dict(cfg)


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RealgapError(f"{field}: expected a number, got {value!r}")
    if not np.isfinite(value):
        raise RealgapError(f"{field}: must be finite, got {value!r}")
    return float(value)


def _pair(field: str, value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RealgapError(f"{field}: expected a range [min, max], got {value!r}")
    lo, hi = _number(field, value[0]), _number(field, value[1])
    if lo > hi:
        raise RealgapError(f"{field}: min {lo:g} > max {hi:g}")
    return [lo, hi]


def check_param(field: str, kind: str, value: Any, scale: float) -> Any:
    """Validate one parameter; returns its plain value (unscaled)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise RealgapError(f"{field}: expected true/false, got {value!r}")
        return value
    if kind == "regex":
        if not isinstance(value, str):
            raise RealgapError(f"{field}: expected a regex string, got {value!r}")
        try:
            re.compile(value)
        except re.error as e:
            raise RealgapError(f"{field}: bad regex {value!r} ({e})") from None
        return value
    if kind.startswith("choice:"):
        options = kind.split(":", 1)[1].split("|")
        if value not in options:
            raise RealgapError(f"{field}: expected one of {', '.join(options)}, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RealgapError(f"{field}: expected an integer >= 1, got {value!r}")
        return value
    if kind in ("offset", "factor"):
        lo, hi = _pair(field, value)
        if kind == "factor":
            if lo < 0:
                raise RealgapError(f"{field}: factor min {lo:g} < 0 would make the value negative")
            slo = scaled(kind, [lo, hi], scale)[0]
            if slo < 0:
                raise RealgapError(f"{field}: scale {scale:g} makes factor min {slo:g} < 0 (negative value)")
        return [lo, hi]
    if kind == "steps":
        lo, hi = _pair(field, value)
        if lo < 0 or lo != int(lo) or hi != int(hi):
            raise RealgapError(f"{field}: expected integer steps [min, max] >= 0, got {value!r}")
        return [int(lo), int(hi)]
    if kind in ("prob", "std"):
        v = _number(field, value)
        if v < 0 or (kind == "prob" and v > 1):
            raise RealgapError(f"{field}: expected {'a probability in [0, 1]' if kind == 'prob' else 'a value >= 0'}, got {v:g}")
        return v
    if kind == "vec3":
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise RealgapError(f"{field}: expected [x, y, z], got {value!r}")
        return [_number(field, v) for v in value]
    raise AssertionError(f"unknown kind {kind}")


def scaled(kind: str, value: Any, scale: float) -> Any:
    """Apply the global scale to a validated parameter (see the module docstring)."""
    if kind == "offset":
        return [value[0] * scale, value[1] * scale]
    if kind == "factor":
        return [1.0 + (value[0] - 1.0) * scale, 1.0 + (value[1] - 1.0) * scale]
    if kind == "prob":
        return min(1.0, value * scale)
    if kind == "std":
        return value * scale
    if kind == "steps":
        return [int(round(value[0] * scale)), int(round(value[1] * scale))]
    return value


def validate(cfg: Any, axis_params: dict[str, dict[str, tuple[str, Any]]]) -> dict:
    """Check a whole config against the axes' declared params; fill defaults; raise one-line errors."""
    raw = to_plain(cfg)
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise RealgapError(f"{PREFIX}.{unknown[0]}: unknown key; known: {', '.join(sorted(TOP_KEYS))}")
    out = {k: raw.get(k, v) for k, v in TOP_KEYS.items()}
    if not isinstance(out["name"], str):
        raise RealgapError(f"{PREFIX}.name: expected a string, got {out['name']!r}")
    scale = _number(f"{PREFIX}.scale", out["scale"])
    if scale < 0:
        raise RealgapError(f"{PREFIX}.scale: must be >= 0, got {scale:g}")
    out["scale"] = scale
    out["strict"] = check_param(f"{PREFIX}.strict", "bool", out["strict"], scale)
    axes_raw = out["axes"] or {}
    if not isinstance(axes_raw, dict):
        raise RealgapError(f"{PREFIX}.axes: expected a mapping of axis name -> settings")
    for name in axes_raw:
        if name not in axis_params:
            raise RealgapError(f"{PREFIX}.axes.{name}: unknown axis; known: {', '.join(axis_params)}")
    axes = {}
    for name, params in axis_params.items():
        given = axes_raw.get(name) or {}
        if not isinstance(given, dict):
            raise RealgapError(f"{PREFIX}.axes.{name}: expected a mapping, got {given!r}")
        spec = {"enabled": ("bool", False), **params}
        for key in given:
            if key not in spec:
                raise RealgapError(f"{PREFIX}.axes.{name}.{key}: unknown key; known: {', '.join(spec)}")
        axes[name] = {
            key: check_param(f"{PREFIX}.axes.{name}.{key}", kind, given.get(key, default), scale)
            for key, (kind, default) in spec.items()
        }
    out["axes"] = axes
    return out


def effective(axis_cfg: dict, params: dict[str, tuple[str, Any]], scale: float) -> dict:
    """An axis's settings with the global scale applied."""
    return {k: scaled(params[k][0], v, scale) if k in params else v for k, v in axis_cfg.items()}


def uniform(rng: np.random.Generator, lo_hi, size=None):
    """``lo + u*(hi-lo)``: always draws the same number of variates, whatever the width."""
    lo, hi = lo_hi
    return lo + rng.random(size) * (hi - lo)


def names(model, objtype, count: int) -> list[str]:
    import mujoco

    return [mujoco.mj_id2name(model, objtype, i) or "" for i in range(count)]


def match(pattern: str, candidates: list[str], allow: tuple[str, ...] = ()) -> list[int]:
    """Ids of candidates whose name fully matches ``pattern`` (and is in ``allow`` when given)."""
    rx = re.compile(pattern)
    return [i for i, n in enumerate(candidates) if rx.fullmatch(n) and (not allow or n in allow)]
