"""Physics axis: sliding friction, body mass (inertia scaled with it), joint damping, actuator gains.

Every quantity is multiplied by a factor drawn per element from its ``factor`` range (nominal 1).
Mass and inertia share one factor per body, as if the density changed, so the inertia stays
consistent with the mass. A position actuator (affine bias with ``biasprm[1] == -kp``) gets its kp
and the matching ``biasprm[1]`` scaled together, so it still servos to its target.
``body_subtreemass`` and the ``*_invweight0`` constants are left at nominal (statistics only).
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "physics"
FIELDS = ("geom_friction", "body_mass", "body_inertia", "dof_damping", "actuator_gainprm", "actuator_biasprm")
PARAMS = {
    "geoms": ("regex", ".*"),  # friction targets
    "bodies": ("regex", ".*"),  # mass targets (the world body is never touched)
    "joints": ("regex", ".*"),  # damping targets
    "actuators": ("regex", ".*"),  # gain targets
    "friction": ("factor", [1.0, 1.0]),
    "mass": ("factor", [1.0, 1.0]),
    "damping": ("factor", [1.0, 1.0]),
    "kp": ("factor", [1.0, 1.0]),
}


def bind(model, scene, cfg):
    geom_names = names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom)
    t = {
        "geoms": match(cfg["geoms"], geom_names, scene.geoms if scene else ()),
        "bodies": [b for b in match(cfg["bodies"], names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)) if b > 0],
        "dofs": [int(model.jnt_dofadr[j]) + k for j in match(cfg["joints"], names(model, mujoco.mjtObj.mjOBJ_JOINT, model.njnt))
                 for k in range(_ndof(model.jnt_type[j]))],
        "actuators": match(cfg["actuators"], names(model, mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu)),
        "geom_names": geom_names,
        "body_names": names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody),
        "act_names": names(model, mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu),
    }
    if not (t["geoms"] or t["bodies"] or t["dofs"] or t["actuators"]):
        return None, "no geom, body, joint or actuator matches its pattern"
    return t, None


def _ndof(jnt_type) -> int:
    return {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3}.get(int(jnt_type), 1)


def apply(model, targets, cfg, rng) -> dict:
    friction = uniform(rng, cfg["friction"], len(targets["geoms"]))
    mass = uniform(rng, cfg["mass"], len(targets["bodies"]))
    damping = uniform(rng, cfg["damping"], len(targets["dofs"]))
    kp = uniform(rng, cfg["kp"], len(targets["actuators"]))
    model.geom_friction[targets["geoms"], 0] *= friction
    model.body_mass[targets["bodies"]] *= mass
    model.body_inertia[targets["bodies"]] *= mass[:, None]
    model.dof_damping[targets["dofs"]] *= damping
    for j, a in enumerate(targets["actuators"]):
        gain = model.actuator_gainprm[a, 0]
        is_position = (model.actuator_biastype[a] == mujoco.mjtBias.mjBIAS_AFFINE
                       and model.actuator_biasprm[a, 1] == -gain and gain != 0)
        model.actuator_gainprm[a, 0] = gain * kp[j]
        if is_position:
            model.actuator_biasprm[a, 1] = -gain * kp[j]
    # Factors per named element (unnamed ones get their type and id); dofs by index.
    return {
        "friction": {targets["geom_names"][g] or f"geom{g}": float(f) for g, f in zip(targets["geoms"], friction)},
        "mass": {targets["body_names"][b] or f"body{b}": float(f) for b, f in zip(targets["bodies"], mass)},
        "damping": {str(d): float(f) for d, f in zip(targets["dofs"], damping)},
        "kp": {targets["act_names"][a] or f"actuator{a}": float(f) for a, f in zip(targets["actuators"], kp)},
    }
