"""The tabletop scene, generated as MJCF from the catalogue.

A cartesian gantry (slide joints x, y, z) carries a parallel-jaw gripper (two slide fingers with
pads). Every joint is driven by a position actuator with a gain ``kp`` against joint damping, so
physics DR (gains, damping, friction, mass) acts on real dynamics; nothing is teleported.

The gantry joints are placed so that their qpos *is* the end-effector site position in the world,
which keeps the action mapping and the expert simple. Every catalogue item is compiled in once;
items absent from an episode are parked far off the table, so the model never recompiles.

Contact groups (contype/conaffinity bits): bit 1 = table, bit 2 = dynamic things. Receptacle walls
only carry bit 2, so they never touch the table (fewer contacts); floors rest on it.
"""

from __future__ import annotations

import math

import numpy as np

from realgap.envs.catalogue import OBJECTS, RECEPTACLES, ObjectSpec, ReceptacleSpec, body_name

TIMESTEP = 0.002
CONTROL_HZ = 10
N_SUBSTEPS = round(1.0 / (CONTROL_HZ * TIMESTEP))  # 50 physics steps per env step

# End-effector workspace (site position, metres). z_min keeps the fingertips just above the table.
WORKSPACE_LOW = np.array([-0.26, -0.22, 0.022])
WORKSPACE_HIGH = np.array([0.26, 0.22, 0.25])
EE_HOME = np.array([0.0, -0.02, 0.18])
FINGER_OPEN = 0.045  # half opening (inner pad face to centre line)
FINGER_CLOSED = 0.0

# Nominal layout slots (x, y). The task sampler picks slots; the `placement` DR axis jitters them.
OBJECT_SLOTS = ((-0.18, -0.09), (-0.06, -0.09), (0.06, -0.09), (0.18, -0.09))
RECEPTACLE_SLOTS = ((-0.16, 0.1), (0.0, 0.1), (0.16, 0.1))
PARK_Y = 3.0  # absent items float here (objects pinned by a constraint), far outside every camera
PARK_Z = 1.0
RECEPTACLE_FLOOR = 0.004  # floor thickness: the inner floor is this far above the receptacle origin
TABLE_BOUNDS = (-0.26, 0.26, -0.2, 0.2)  # xy region layouts (and placement DR) stay inside


def park_position(item_index: int) -> tuple[float, float]:
    return (-1.5 + 0.3 * item_index, PARK_Y)


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _look_at(pos, target) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with world z up."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:  # looking straight down
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return _fmt([*right, *up])


def _object_body(spec: ObjectSpec, index: int) -> str:
    x, y = park_position(index)
    name = body_name(spec.name)
    rgba = _fmt(spec.colour_rgba)
    if spec.shape == "block":
        geom = f'<geom name="{name}" class="object" type="box" size="{_fmt([spec.size[0]] * 3)}" rgba="{rgba}" mass="{spec.mass}"/>'
    else:
        geom = f'<geom name="{name}" class="object" type="cylinder" size="{_fmt(spec.size)}" rgba="{rgba}" mass="{spec.mass}"/>'
    return (
        f'<body name="{name}" pos="{x:.4f} {y:.4f} {PARK_Z}">'
        f'<freejoint name="{name}_free"/>{geom}</body>'
    )


def _receptacle_body(spec: ReceptacleSpec, index: int) -> str:
    x, y = park_position(len(OBJECTS) + index)
    name = body_name(spec.name)
    rgba = _fmt(spec.colour_rgba)
    t, h = spec.wall, spec.height
    floor_t = RECEPTACLE_FLOOR
    geoms = []
    wall_mass = spec.mass * 0.5
    if spec.round:
        r = spec.inner[0]
        geoms.append(
            f'<geom name="{name}_floor" class="floor" type="cylinder" size="{r + t:.4f} {floor_t / 2:.4f}" '
            f'pos="0 0 {floor_t / 2:.4f}" rgba="{rgba}" mass="{spec.mass * 0.5}"/>'
        )
        n = 16
        half_len = (r + t) * math.tan(math.pi / n) + 0.001
        for k in range(n):
            a = 2 * math.pi * k / n
            cx, cy = (r + t / 2) * math.cos(a), (r + t / 2) * math.sin(a)
            geoms.append(
                f'<geom name="{name}_wall{k}" class="wall" type="box" size="{t / 2:.4f} {half_len:.4f} {h / 2:.4f}" '
                f'pos="{cx:.4f} {cy:.4f} {h / 2:.4f}" euler="0 0 {a:.5f}" rgba="{rgba}" mass="{wall_mass / n:.4f}"/>'
            )
    else:
        hx, hy = spec.inner
        geoms.append(
            f'<geom name="{name}_floor" class="floor" type="box" size="{hx + t:.4f} {hy + t:.4f} {floor_t / 2:.4f}" '
            f'pos="0 0 {floor_t / 2:.4f}" rgba="{rgba}" mass="{spec.mass * 0.5}"/>'
        )
        walls = (
            ((hx + t / 2, 0), (t / 2, hy + t)),
            ((-hx - t / 2, 0), (t / 2, hy + t)),
            ((0, hy + t / 2), (hx, t / 2)),
            ((0, -hy - t / 2), (hx, t / 2)),
        )
        for k, ((cx, cy), (sx, sy)) in enumerate(walls):
            geoms.append(
                f'<geom name="{name}_wall{k}" class="wall" type="box" size="{sx:.4f} {sy:.4f} {h / 2:.4f}" '
                f'pos="{cx:.4f} {cy:.4f} {h / 2:.4f}" rgba="{rgba}" mass="{wall_mass / 4:.4f}"/>'
            )
    # Static body (no joint): the env lays it out through model.body_pos / body_quat each episode.
    return f'<body name="{name}" pos="{x:.4f} {y:.4f} {PARK_Z}">{"".join(geoms)}</body>'


def pin_at_centre_of_mass(model) -> None:
    """Move each park anchor to its body's centre of mass, so a parked item hangs without torque."""
    for i in range(model.neq):
        body = model.eq_obj1id[i]
        model.eq_data[i, 0:3] = model.body_ipos[body]
        model.eq_data[i, 3:6] = model.body_pos[body] + model.body_ipos[body]


FRONT_CAMERA = ((0.0, -0.52, 0.46), (0.0, 0.04, 0.0))  # position, the point it looks at
MAIN_LIGHT = '<light name="main" pos="0.3 -0.4 1.2" dir="-0.25 0.35 -1" diffuse="0.6 0.6 0.6" specular="0.1 0.1 0.1"/>'


def visual_xml(offscreen_size: int) -> str:
    """The render settings (no shadows, no multisampling, coarse meshes); benchmarks reuse them for a floor scene."""
    return f"""<visual>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="4"/>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4"/>
  </visual>"""


def front_camera_xml() -> str:
    front_pos, front_target = FRONT_CAMERA
    return f'<camera name="front" pos="{_fmt(front_pos)}" xyaxes="{_look_at(front_pos, front_target)}" fovy="50"/>'


def build_mjcf(offscreen_size: int = 96) -> str:
    """The whole scene as an MJCF string; ``offscreen_size`` sizes the offscreen buffer to the images."""
    wrist_pos, wrist_target = (-0.09, 0.0, 0.07), (0.0, 0.0, -0.04)
    objects = "".join(_object_body(s, i) for i, s in enumerate(OBJECTS))
    receptacles = "".join(_receptacle_body(s, i) for i, s in enumerate(RECEPTACLES))
    # One connect constraint per object pins it at its park position (qpos0) while it is absent; the
    # env toggles data.eq_active, which is state, not model, so nothing recompiles and DR never sees
    # it. (A world weld did not hold in MuJoCo 4.0; a connect at the centre of mass does.)
    welds = "".join(f'<connect name="park_{body_name(s.name)}" body1="{body_name(s.name)}" anchor="0 0 0"/>' for s in OBJECTS)
    lo, hi = WORKSPACE_LOW, WORKSPACE_HIGH
    return f"""
<mujoco model="realgap_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  {visual_xml(offscreen_size)}
  <default>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001" />
    <default class="object"><geom contype="2" conaffinity="3" condim="4" friction="1.0 0.01 0.0005"/></default>
    <default class="floor"><geom contype="2" conaffinity="3" condim="3" friction="0.8 0.005 0.0001"/></default>
    <default class="wall"><geom contype="2" conaffinity="2" condim="3" friction="0.5 0.005 0.0001"/></default>
    <default class="finger"><geom contype="2" conaffinity="3" condim="3" friction="1.0 0.01 0.0005" rgba="0.25 0.25 0.28 1"/></default>
    <default class="pad"><geom contype="2" conaffinity="3" condim="4" friction="1.6 0.02 0.001" rgba="0.08 0.08 0.08 1"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.62 0.5 0.38" rgb2="0.58 0.46 0.35" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <!-- plane size[2] is the render grid spacing: a coarse grid keeps software rendering fast -->
    {MAIN_LIGHT}
    <geom name="table" type="plane" size="0.4 0.35 0.2" material="table" contype="1" conaffinity="0" condim="3" friction="0.8 0.005 0.0001"/>
    {front_camera_xml()}
    <body name="gantry_x">
      <inertial pos="0 0 0" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>
      <joint name="ee_x" type="slide" axis="1 0 0" range="{lo[0] - 0.02:.3f} {hi[0] + 0.02:.3f}" damping="40" armature="0.01"/>
      <body name="gantry_y">
        <inertial pos="0 0 0" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>
        <joint name="ee_y" type="slide" axis="0 1 0" range="{lo[1] - 0.02:.3f} {hi[1] + 0.02:.3f}" damping="40" armature="0.01"/>
        <body name="gripper" gravcomp="1">
          <joint name="ee_z" type="slide" axis="0 0 1" range="{lo[2] - 0.02:.3f} {hi[2] + 0.02:.3f}" damping="40" armature="0.01"/>
          <site name="ee" pos="0 0 0" size="0.004" rgba="1 0 0 0"/>
          <geom name="palm" type="box" size="0.02 0.06 0.01" pos="0 0 0.05" mass="0.3" contype="2" conaffinity="3" rgba="0.3 0.3 0.33 1"/>
          <camera name="wrist" pos="{_fmt(wrist_pos)}" xyaxes="{_look_at(wrist_pos, wrist_target)}" fovy="70"/>
          <body name="finger_left" gravcomp="1">
            <joint name="finger_left" type="slide" axis="0 1 0" range="0 0.05" damping="5" armature="0.002"/>
            <geom name="finger_left" class="finger" type="box" size="0.011 0.004 0.03" pos="0 0.006 0.01" mass="0.02"/>
            <geom name="pad_left" class="pad" type="box" size="0.01 0.001 0.02" pos="0 0.001 0" mass="0.002"/>
          </body>
          <body name="finger_right" gravcomp="1">
            <joint name="finger_right" type="slide" axis="0 -1 0" range="0 0.05" damping="5" armature="0.002"/>
            <geom name="finger_right" class="finger" type="box" size="0.011 0.004 0.03" pos="0 -0.006 0.01" mass="0.02"/>
            <geom name="pad_right" class="pad" type="box" size="0.01 0.001 0.02" pos="0 -0.001 0" mass="0.002"/>
          </body>
        </body>
      </body>
    </body>
    {objects}
    {receptacles}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    {welds}
  </equality>
  <actuator>
    <position name="ee_x" joint="ee_x" kp="2000" ctrlrange="{lo[0]:.3f} {hi[0]:.3f}" forcerange="-60 60"/>
    <position name="ee_y" joint="ee_y" kp="2000" ctrlrange="{lo[1]:.3f} {hi[1]:.3f}" forcerange="-60 60"/>
    <position name="ee_z" joint="ee_z" kp="2000" ctrlrange="{lo[2]:.3f} {hi[2]:.3f}" forcerange="-60 60"/>
    <position name="finger_left" joint="finger_left" kp="300" ctrlrange="0 {FINGER_OPEN}" forcerange="-12 12"/>
    <position name="finger_right" joint="finger_right" kp="300" ctrlrange="0 {FINGER_OPEN}" forcerange="-12 12"/>
  </actuator>
</mujoco>
"""


def project_to_image(points: np.ndarray, cam_pos, cam_quat, fovy_deg: float, size: int) -> np.ndarray:
    """Pixel coordinates (col, row), continuous with (0, 0) the image's top-left corner, of world points
    (..., 3) seen by a worldbody camera (MuJoCo: looks along its -z, y up) of square ``size`` images.
    Used for the image policy's training labels (where the named items are in the frame)."""
    import mujoco

    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, np.asarray(cam_quat, dtype=np.float64))
    local = (np.asarray(points, dtype=np.float64) - np.asarray(cam_pos)) @ rot.reshape(3, 3)  # R^T (p - c)
    focal = 0.5 * size / np.tan(np.deg2rad(fovy_deg) / 2.0)
    depth = np.maximum(-local[..., 2], 1e-6)
    col = 0.5 * size + focal * local[..., 0] / depth
    row = 0.5 * size - focal * local[..., 1] / depth
    return np.stack([col, row], axis=-1)


_NOMINAL_CAMERAS: dict = {}


def camera_pose(name: str, dr_params: dict | None = None) -> dict:
    """A camera's {pos, quat, fovy} in an episode: the camera axis's values when it ran (``dr_params``),
    else the scene's nominal pose."""
    applied = ((dr_params or {}).get("camera") or {}).get(name)
    if applied:
        return applied
    if name not in _NOMINAL_CAMERAS:
        import mujoco

        model = mujoco.MjModel.from_xml_string(build_mjcf())
        i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if i < 0:
            raise KeyError(name)
        _NOMINAL_CAMERAS[name] = {"pos": model.cam_pos[i].tolist(), "quat": model.cam_quat[i].tolist(),
                                  "fovy": float(model.cam_fovy[i])}
    return _NOMINAL_CAMERAS[name]
