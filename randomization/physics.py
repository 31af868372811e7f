"""Physics axis: sliding friction, body mass (inertia scaled with it), joint damping, actuator gains.

Every quantity is multiplied by a factor drawn from its ``factor`` range (nominal 1).

- **Friction** (``geom_friction[:, 0]``, sliding only). MuJoCo gives a contact the larger of its two
  geoms' frictions (or the higher-``geom_priority`` geom's), so lowering one geom rarely reaches the
  contact. ``friction_mode`` picks how factors are drawn:
  ``global`` (default): ONE factor per episode scales every matched geom, so every contact among them
  scales by exactly that factor; ``per_geom``: one factor per matched geom (the contact then mostly
  keeps the larger, less-perturbed partner); ``target_pairs``: one factor scales the matched geoms and
  every geom that can collide with them (``contype``/``conaffinity``), so each contact that involves
  a matched geom scales by the factor while contacts elsewhere stay nominal when none of their geoms
  is a partner. ``dr_params`` logs the factor(s) and ``contact_friction``: for each geom of a free
  body (or each matched geom when there is none), ``[min, max]`` of the sliding friction its
  contacts actually use over all partners it can collide with.
- **Mass**: mass and inertia share one factor per body, as if the density changed.
- **Damping**: one factor per dof. **kp**: one factor per actuator; a position actuator (affine bias
  with ``biasprm[1] == -kp``) gets ``biasprm[1]`` scaled with it, so it still servos to its target.

After a mass change ``mujoco.mj_setConst`` recomputes the derived constants (``DERIVED``:
``body_subtreemass``, ``body_invweight0``, ``dof_invweight0``, ``dof_M0``, ``actuator_acc0``, ...)
on a scratch ``MjData``, so the contact regulariser and the implicit-mass constants follow the new
mass. The nominal value of every derived field is cached at bind and restored bit-exactly with the
fields written here; when every mass factor is 1 nothing is recomputed.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "physics"
# Fields ``mj_setConst`` may rewrite (those this MuJoCo build has): restored with the fields we write.
DERIVED = tuple(f for f in ("body_subtreemass", "body_invweight0", "dof_invweight0", "dof_M0", "tendon_invweight0",
                            "tendon_length0", "actuator_acc0", "actuator_length0", "cam_pos0", "cam_poscom0",
                            "cam_mat0", "light_pos0", "light_poscom0", "light_dir0")
                if hasattr(mujoco.MjModel, f))
FIELDS = ("geom_friction", "body_mass", "body_inertia", "dof_damping", "actuator_gainprm", "actuator_biasprm") + DERIVED
FRICTION_MODES = ("global", "per_geom", "target_pairs")
PARAMS = {
    "geoms": ("regex", ".*"),  # friction targets
    "bodies": ("regex", ".*"),  # mass targets (the world body is never touched)
    "joints": ("regex", ".*"),  # damping targets
    "actuators": ("regex", ".*"),  # gain targets
    "friction_mode": ("choice:" + "|".join(FRICTION_MODES), "global"),
    "friction": ("factor", [1.0, 1.0]),
    "mass": ("factor", [1.0, 1.0]),
    "damping": ("factor", [1.0, 1.0]),
    "kp": ("factor", [1.0, 1.0]),
}


def bind(model, scene, cfg):
    geom_names = names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom)
    matched = match(cfg["geoms"], geom_names, scene.geoms if scene else ())
    scaled = sorted(set(matched) | _partners(model, matched)) if cfg["friction_mode"] == "target_pairs" else matched
    t = {
        "matched_geoms": matched,
        "geoms": scaled,
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
    free = {int(model.jnt_bodyid[j]) for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE}
    t["reported_geoms"] = [g for g in matched if int(model.geom_bodyid[g]) in free] or list(matched)
    t["scratch"] = mujoco.MjData(model) if t["bodies"] else None  # mj_setConst's workspace, never the env's data
    return t, None


def _ndof(jnt_type) -> int:
    return {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3}.get(int(jnt_type), 1)


def _collides(model, g: int, h: int) -> bool:
    """MuJoCo's contype/conaffinity test (a geom never collides with its own body)."""
    if model.geom_bodyid[g] == model.geom_bodyid[h]:
        return False
    return bool((model.geom_contype[g] & model.geom_conaffinity[h]) or (model.geom_contype[h] & model.geom_conaffinity[g]))


def _partners(model, geoms) -> set[int]:
    return {h for g in geoms for h in range(model.ngeom) if _collides(model, g, h)}


def contact_friction(model, g: int, h: int) -> float:
    """The sliding friction MuJoCo uses for a contact of geoms g and h: the higher-priority geom's, else the max."""
    pg, ph = model.geom_priority[g], model.geom_priority[h]
    if pg != ph:
        return float(model.geom_friction[g if pg > ph else h, 0])
    return float(max(model.geom_friction[g, 0], model.geom_friction[h, 0]))


def apply(model, targets, cfg, rng) -> dict:
    geoms = targets["geoms"]
    # Always len(geoms) variates (at least one), whatever the mode, so the later draws never shift.
    friction_draws = uniform(rng, cfg["friction"], max(1, len(geoms)))
    mass = uniform(rng, cfg["mass"], len(targets["bodies"]))
    damping = uniform(rng, cfg["damping"], len(targets["dofs"]))
    kp = uniform(rng, cfg["kp"], len(targets["actuators"]))
    per_geom = cfg["friction_mode"] == "per_geom"
    friction = friction_draws[: len(geoms)] if per_geom else np.full(len(geoms), friction_draws[0])
    model.geom_friction[geoms, 0] *= friction
    model.body_mass[targets["bodies"]] *= mass
    model.body_inertia[targets["bodies"]] *= mass[:, None]
    if targets["scratch"] is not None and np.any(mass != 1.0):
        mujoco.mj_setConst(model, targets["scratch"])  # subtree mass, invweight0, acc0 follow the new mass
    model.dof_damping[targets["dofs"]] *= damping
    for j, a in enumerate(targets["actuators"]):
        gain = model.actuator_gainprm[a, 0]
        is_position = (model.actuator_biastype[a] == mujoco.mjtBias.mjBIAS_AFFINE
                       and model.actuator_biasprm[a, 1] == -gain and gain != 0)
        model.actuator_gainprm[a, 0] = gain * kp[j]
        if is_position:
            model.actuator_biasprm[a, 1] = -gain * kp[j]
    # Factors per named element (unnamed ones get their type and id); dofs by index.
    gname = lambda g: targets["geom_names"][g] or f"geom{g}"  # noqa: E731
    return {
        "friction_mode": cfg["friction_mode"],
        "friction": ({gname(g): float(f) for g, f in zip(geoms, friction)} if per_geom
                     else float(friction_draws[0])),
        "contact_friction": {gname(g): _friction_range(model, g) for g in targets["reported_geoms"]},
        "mass": {targets["body_names"][b] or f"body{b}": float(f) for b, f in zip(targets["bodies"], mass)},
        "damping": {str(d): float(f) for d, f in zip(targets["dofs"], damping)},
        "kp": {targets["act_names"][a] or f"actuator{a}": float(f) for a, f in zip(targets["actuators"], kp)},
    }


def _friction_range(model, g: int) -> list[float]:
    used = [contact_friction(model, g, h) for h in range(model.ngeom) if _collides(model, g, h)]
    return [min(used), max(used)] if used else []
