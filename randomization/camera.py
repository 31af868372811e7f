"""Camera axis: position, orientation and field of view of named cameras.

The orientation offset is a rotation by an angle from ``rot_angle`` (rad) about a random axis,
composed with the *nominal* quaternion (``q = q_nominal * dq``, in the camera frame); the nominal
values are restored before every episode, so offsets never accumulate. ``pos_bias`` / ``rot_bias_deg``
are fixed offsets (metres in the parent-body frame, camera-frame xyz Euler degrees) for target domains: a
mis-calibrated real camera. They are not ranges, so ``scale`` leaves them alone.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "camera"
FIELDS = ("cam_pos", "cam_quat", "cam_fovy")
PARAMS = {
    "cameras": ("regex", ".+"),  # named cameras only: the free viewer camera is not a model camera
    "pos_offset": ("offset", [0.0, 0.0]),  # m, per coordinate
    "rot_angle": ("offset", [0.0, 0.0]),  # rad
    "fovy_offset": ("offset", [0.0, 0.0]),  # deg
    "pos_bias": ("vec3", [0.0, 0.0, 0.0]),
    "rot_bias_deg": ("vec3", [0.0, 0.0, 0.0]),
}


def bind(model, scene, cfg):
    cams = match(cfg["cameras"], names(model, mujoco.mjtObj.mjOBJ_CAMERA, model.ncam), scene.cameras if scene else ())
    if not cams:
        return None, f"no named camera matches cameras={cfg['cameras']!r}"
    return {"cameras": cams, "names": names(model, mujoco.mjtObj.mjOBJ_CAMERA, model.ncam)}, None


def apply(model, targets, cfg, rng) -> dict:
    n = len(targets["cameras"])
    pos = uniform(rng, cfg["pos_offset"], (n, 3))
    axes = rng.standard_normal((n, 3))
    angle = uniform(rng, cfg["rot_angle"], n)
    fovy = uniform(rng, cfg["fovy_offset"], n)
    bias = np.zeros(4)
    mujoco.mju_euler2Quat(bias, np.deg2rad(cfg["rot_bias_deg"]), "xyz")
    out = {}
    for j, i in enumerate(targets["cameras"]):
        dq, q = np.zeros(4), np.zeros(4)
        mujoco.mju_axisAngle2Quat(dq, axes[j] / (np.linalg.norm(axes[j]) or 1.0), angle[j])
        mujoco.mju_mulQuat(q, model.cam_quat[i], bias)
        mujoco.mju_mulQuat(q, q.copy(), dq)
        model.cam_quat[i] = q
        model.cam_pos[i] += pos[j] + np.asarray(cfg["pos_bias"])
        model.cam_fovy[i] = float(np.clip(model.cam_fovy[i] + fovy[j], 1.0, 179.0))
        out[targets["names"][i]] = {"pos": model.cam_pos[i].tolist(), "quat": model.cam_quat[i].tolist(),
                                    "fovy": float(model.cam_fovy[i])}
    return out
