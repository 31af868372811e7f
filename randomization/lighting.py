"""Lighting axis: light positions, directions, diffuse and ambient colours, and the headlight.

Offsets are added to the nominal values (restored before every episode, so they never accumulate).
A direction is rotated by an angle drawn from ``dir_angle`` (rad) about a random axis.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "lighting"
FIELDS = ("light_pos", "light_dir", "light_diffuse", "light_ambient", "vis.headlight.diffuse", "vis.headlight.ambient")
PARAMS = {
    "lights": ("regex", ".*"),  # light names; unnamed lights are ""
    "pos_offset": ("offset", [0.0, 0.0]),  # m, per coordinate
    "dir_angle": ("offset", [0.0, 0.0]),  # rad, tilt of the direction
    "diffuse_offset": ("offset", [0.0, 0.0]),  # added to all RGB channels (brightness)
    "ambient_offset": ("offset", [0.0, 0.0]),
    "headlight": ("bool", True),  # also randomize the headlight's diffuse/ambient
}


def bind(model, scene, cfg):
    lights = match(cfg["lights"], names(model, mujoco.mjtObj.mjOBJ_LIGHT, model.nlight), scene.lights if scene else ())
    if not lights and not cfg["headlight"]:
        return None, f"no light matches lights={cfg['lights']!r} and headlight is off"
    return {"lights": lights, "names": names(model, mujoco.mjtObj.mjOBJ_LIGHT, model.nlight)}, None


def _tilt(direction: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``direction`` by ``angle`` about ``axis`` made perpendicular to it (Rodrigues)."""
    d = direction / (np.linalg.norm(direction) or 1.0)
    k = axis - d * (axis @ d)
    k = k / (np.linalg.norm(k) or 1.0)
    return d * np.cos(angle) + np.cross(k, d) * np.sin(angle)


def apply(model, targets, cfg, rng) -> dict:
    out = {}
    # Draw everything for every light up front: a fixed count per light, whatever is enabled.
    n = len(targets["lights"])
    pos = uniform(rng, cfg["pos_offset"], (n, 3))
    axes = rng.standard_normal((n, 3))
    angle = uniform(rng, cfg["dir_angle"], n)
    diffuse = uniform(rng, cfg["diffuse_offset"], n)
    ambient = uniform(rng, cfg["ambient_offset"], n)
    head = uniform(rng, cfg["diffuse_offset"], 1)[0], uniform(rng, cfg["ambient_offset"], 1)[0]
    for j, i in enumerate(targets["lights"]):
        model.light_pos[i] += pos[j]
        model.light_dir[i] = _tilt(model.light_dir[i], axes[j], angle[j])
        model.light_diffuse[i] = np.clip(model.light_diffuse[i] + diffuse[j], 0.0, 1.0)
        model.light_ambient[i] = np.clip(model.light_ambient[i] + ambient[j], 0.0, 1.0)
        out[targets["names"][i] or f"light{i}"] = {
            "pos": model.light_pos[i].tolist(),
            "dir": model.light_dir[i].tolist(),
            "diffuse": model.light_diffuse[i].tolist(),
            "ambient": model.light_ambient[i].tolist(),
        }
    if cfg["headlight"]:
        hl = model.vis.headlight
        hl.diffuse = np.clip(hl.diffuse + head[0], 0.0, 1.0)
        hl.ambient = np.clip(hl.ambient + head[1], 0.0, 1.0)
        out["headlight"] = {"diffuse": np.asarray(hl.diffuse).tolist(), "ambient": np.asarray(hl.ambient).tolist()}
    return out
