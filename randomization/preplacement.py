"""Pre-placement axis: distractor objects that start already inside a non-target receptacle.

Runs in ``reset_state`` after placement. Each distractor (present object other than the target)
independently starts inside one of the non-target receptacles with probability ``probability``,
at a random spot on the receptacle's inner floor (``receptacle_inner_half_extents`` shrunk by
``margin``, in the receptacle frame), keeping its rest height above the table. Two distractors may
land in the same receptacle; they are not kept apart (the env's settle step resolves contacts). Every distractor
always draws four variates (go?, which receptacle, x, y), so the stream never shifts with the scale.
Needs a ``SceneInfo`` with receptacles: a foreign env has none, so the axis reports itself inapplicable.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .placement import free_joint

NAME = "preplacement"
FIELDS = ()  # moves objects through data.qpos only
PARAMS = {
    "probability": ("prob", 0.0),
    "margin": ("std", 0.01),  # m kept clear of the receptacle walls; not scaled
}


def bind(model, scene, cfg):
    if scene is None or not scene.receptacle_bodies:
        return None, "no SceneInfo with receptacle_bodies (needs receptacles to pre-place into)"
    return {}, None


def apply_state(model, data, targets, scene, cfg, rng) -> dict:
    out = {}
    receptacles = scene.other_receptacles
    for name in scene.distractors:
        go, pick, u, v = rng.random(4)
        if go >= cfg["probability"] or not receptacles:
            continue
        rec = receptacles[min(int(pick * len(receptacles)), len(receptacles) - 1)]
        r = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, rec)
        hx, hy = (max(0.0, h - cfg["margin"]) for h in scene.receptacle_inner_half_extents[rec])
        local = np.array([(2 * u - 1) * hx, (2 * v - 1) * hy, 0.0])
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.body_quat[r])  # receptacles are children of the world body
        world = model.body_pos[r] + rot.reshape(3, 3) @ local
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        j = (mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, scene.object_joints[name])
             if name in scene.object_joints else free_joint(model, b))
        adr = int(model.jnt_qposadr[j])
        rest = data.qpos[adr + 2] - scene.table_z
        data.qpos[adr : adr + 3] = [world[0], world[1], scene.receptacle_floor_z[rec] + rest]
        out[name] = {"receptacle": rec, "local_xy": local[:2].tolist(), "pos": data.qpos[adr : adr + 3].tolist()}
    return out
