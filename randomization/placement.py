"""Placement axis: initial xy offsets and yaw of objects (free joints) and receptacles (static bodies).

Runs in ``reset_state``, after the env wrote its nominal layout: objects move through their free
joint's ``qpos``, receptacles through ``model.body_pos`` / ``model.body_quat`` (restored to nominal
by the next ``reset_model``). Each item draws ``tries`` candidate offsets (always all of them, so the
stream never shifts) and takes the first that keeps it inside ``table_bounds`` and at least
``min_separation`` (xy centre distance) from the items already placed; if none fits it stays nominal.
Without a ``SceneInfo`` (generic wrapper) every free-joint body matching ``objects`` is an object.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "placement"
FIELDS = ("body_pos", "body_quat")
PARAMS = {
    "objects": ("regex", ".*"),  # body names among the scene's objects
    "receptacles": ("regex", ".*"),  # body names among the scene's receptacles
    "object_xy": ("offset", [0.0, 0.0]),  # m
    "object_yaw": ("offset", [0.0, 0.0]),  # rad
    "receptacle_xy": ("offset", [0.0, 0.0]),
    "receptacle_yaw": ("offset", [0.0, 0.0]),
    "min_separation": ("std", 0.0),  # m; not a range, so not scaled ("std" kind: a value >= 0)
    "tries": ("int", 8),
}


def free_joint(model, body: int) -> int | None:
    for j in range(int(model.body_jntadr[body]), int(model.body_jntadr[body] + model.body_jntnum[body])):
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            return j
    return None


def bind(model, scene, cfg):
    body_names = names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)
    if scene is not None and (scene.object_bodies or scene.receptacle_bodies):
        return {"scene": True}, None
    free = [b for b in match(cfg["objects"], body_names) if free_joint(model, b) is not None]
    if not free:
        return None, f"no free-joint body matches objects={cfg['objects']!r} and no SceneInfo lists objects"
    return {"scene": False, "free_bodies": [body_names[b] for b in free]}, None


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _rotate(quat: np.ndarray, yaw: float) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, yaw_quat(yaw), quat)  # world-frame yaw on top of the nominal orientation
    return out


def _choose(rng, xy_range, yaw_range, tries, start, placed, bounds, min_sep):
    cand = uniform(rng, xy_range, (tries, 2))
    yaws = uniform(rng, yaw_range, tries)
    for c, yaw in zip(cand, yaws):
        p = start + c
        if bounds is not None and not (bounds[0] <= p[0] <= bounds[1] and bounds[2] <= p[1] <= bounds[3]):
            continue
        if all(np.hypot(*(p - q)) >= min_sep for q in placed):
            return c, float(yaw)
    return np.zeros(2), 0.0


def apply_state(model, data, targets, scene, cfg, rng) -> dict:
    body_names = names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)
    objects = scene.object_bodies if targets["scene"] else targets["free_bodies"]
    receptacles = scene.receptacle_bodies if targets["scene"] else ()
    bounds = scene.table_bounds if targets["scene"] else None
    rx_obj = set(match(cfg["objects"], list(objects)))
    rx_rec = set(match(cfg["receptacles"], list(receptacles)))
    out = {"objects": {}, "receptacles": {}}
    placed: list[np.ndarray] = []
    # Receptacles first (they are big and static), then objects around them.
    for k, name in enumerate(receptacles):
        b = body_names.index(name)
        dxy, yaw = _choose(rng, cfg["receptacle_xy"], cfg["receptacle_yaw"], cfg["tries"],
                           model.body_pos[b, :2].copy(), placed, bounds, cfg["min_separation"])
        if k in rx_rec:
            model.body_pos[b, :2] += dxy
            model.body_quat[b] = _rotate(model.body_quat[b], yaw)
            out["receptacles"][name] = {"dxy": dxy.tolist(), "yaw": yaw}
        placed.append(model.body_pos[b, :2].copy())
    for k, name in enumerate(objects):
        b = body_names.index(name)
        j = free_joint(model, b) if not (targets["scene"] and name in scene.object_joints) else \
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, scene.object_joints[name])
        adr = int(model.jnt_qposadr[j])
        dxy, yaw = _choose(rng, cfg["object_xy"], cfg["object_yaw"], cfg["tries"],
                           data.qpos[adr : adr + 2].copy(), placed, bounds, cfg["min_separation"])
        if k in rx_obj:
            data.qpos[adr : adr + 2] += dxy
            data.qpos[adr + 3 : adr + 7] = _rotate(data.qpos[adr + 3 : adr + 7], yaw)
            out["objects"][name] = {"dxy": dxy.tolist(), "yaw": yaw}
        placed.append(data.qpos[adr : adr + 2].copy())
    return out
