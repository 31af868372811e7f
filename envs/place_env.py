"""``PlaceInReceptacleEnv``: "place <object> in <receptacle>" on the MuJoCo tabletop.

Episode flow (``reset``): sample the task (stream "task") -> nominal layout (slots) -> the layout
hook -> gripper home -> settle one control period. Each ``step`` integrates the normalized action
into the position-actuator targets and runs ``N_SUBSTEPS`` physics steps (10 Hz control).

Domain randomization reaches this env the way it reaches any other: through the
``realgap.randomization.DomainRandomization`` wrapper (``realgap.envs.make(id, randomization=...)``).
The env only offers the wrapper three hooks: ``dr_scene()`` (what DR may touch this episode),
``dr_layout_hook`` (called with the env after the nominal layout and before settling, so
placement jitter settles like the nominal layout does) and ``mujoco_renderers()`` (where
randomized textures must be uploaded).

Episode ends: ``terminated`` on success; ``truncated`` on timeout, and also when the simulation goes
unstable (NaN/inf state or a MuJoCo BADQACC/BADQPOS/BADQVEL warning) -- an unstable episode is not
an MDP terminal state, so it is a truncation with ``info["termination_reason"] = "unstable: <what>"``.

Failure events (``info["failure_event"] = {"type", "step", "item"}``): the first moment of the episode
at which a failure became visible, so that detectors can be judged by lead time to it rather than to
the timeout. Read-only checks of the state after each step (no effect on physics, observations,
rewards or terminations); from the step it happens on, every info carries it. Types:
``knocked_over`` (an object upright at reset tilts > 45 deg; not the target once inside its receptacle),
``wrong_receptacle`` (the target at rest, released, inside another receptacle), ``dropped`` (the target,
once lifted > 2 cm, at rest and released outside every receptacle), ``distractor_moved`` (a non-target
object > 3 cm, horizontally, from where it settled at reset). None on the step that succeeds.
"""

from __future__ import annotations

import hashlib
import itertools
import string

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from realgap.envs import image_key
from realgap.envs import scene as S
from realgap.envs.catalogue import ITEM_NAMES, OBJECT_NAMES, OBJECTS, RECEPTACLES, body_name, object_spec, receptacle_spec
from realgap.envs.tasks import Task, TaskVariant, make_task, object_pool, receptacle_pool
from realgap.errors import RealgapError

OBS_MODES = ("state", "image", "state+image")
CAMERAS = ("front", "wrist")
MAX_EE_STEP = 0.04  # metres per env step at |action| = 1 (0.4 m/s at 10 Hz)
MAX_TARGET_LEAD = 0.06  # the actuator target never runs further than this ahead of the gripper
OBJECT_ROW = 6  # [present, x, y, z, cos yaw, sin yaw]
INSTRUCTION_CHARSET = string.ascii_lowercase + " "
INSTRUCTION_MAX_LEN = 96
DEFAULT_MAX_STEPS = 100
KNOCKED_TILT_COS = np.cos(np.deg2rad(45.0))  # up axis further than 45 deg from vertical: knocked over
DROP_LIFT = 0.02  # the target counts as lifted once its centre is this far above where it settled
DISTRACTOR_SHIFT = 0.03  # horizontal displacement of a non-target object that counts as disturbing it
RESTING_SPEED = 0.05  # m/s: an object slower than this is at rest (success uses the same bound)
UNSTABLE_WARNINGS = {  # MuJoCo auto-resets the state on these; we end the episode instead
    mujoco.mjtWarning.mjWARN_BADQACC: "bad qacc",
    mujoco.mjtWarning.mjWARN_BADQPOS: "bad qpos",
    mujoco.mjtWarning.mjWARN_BADQVEL: "bad qvel",
}
HIDDEN_GEOM_GROUP = 5  # mjvOption's default geomgroup shows groups 0-2 only
_UNSTABLE_CODES = np.array([int(code) for code in UNSTABLE_WARNINGS])  # indices into data.warning.number


# One renderer per process for each scene XML and image size, shared by every env instance: creating
# a GL context and uploading a model to it costs ~0.45 s, which each env of each group paid before.
# A renderer draws whichever env last claimed it (``_claim``): that env's model and textures.
_SHARED_RENDERERS: dict[tuple[str, int], mujoco.Renderer] = {}
_ENV_TOKENS = itertools.count()


def yaw_of(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class PlaceInReceptacleEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": S.CONTROL_HZ}

    def __init__(
        self,
        obs_mode: str = "state",
        image_size: int = 96,
        cameras=("front",),
        include_privileged: bool = True,
        allow_held_out: bool = False,
        objects=None,
        receptacles=None,
        max_episode_steps: int = DEFAULT_MAX_STEPS,
        render_mode: str | None = None,
        render_size: int | None = None,
        task_variant=None,
    ):
        # -- validate everything before building or simulating anything --
        if obs_mode not in OBS_MODES:
            raise RealgapError(f"obs_mode: {obs_mode!r} is not one of {OBS_MODES}")
        if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 1024:
            raise RealgapError(f"image_size: {image_size!r} must be an integer in [16, 1024]")
        cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)
        if not cameras or any(c not in CAMERAS for c in cameras) or len(set(cameras)) != len(cameras):
            raise RealgapError(f"cameras: {list(cameras)} must be distinct names from {CAMERAS}")
        if render_mode not in (None, "rgb_array"):
            raise RealgapError(f"render_mode: {render_mode!r} is not one of [None, 'rgb_array']")
        if not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
            raise RealgapError(f"max_episode_steps: {max_episode_steps!r} must be a positive integer")
        self.obs_mode, self.image_size, self.cameras = obs_mode, int(image_size), cameras
        # object_state is privileged: on by default in every mode (the expert and analyses read it).
        self.include_privileged = bool(include_privileged)
        self.object_pool = object_pool(objects, allow_held_out)
        self.receptacle_pool = receptacle_pool(receptacles, allow_held_out)
        self.task_variant = TaskVariant.from_spec(task_variant, allow_held_out)  # grounding tests force a task
        self.render_mode, self.render_size = render_mode, int(render_size or image_size)
        self._max_steps = int(max_episode_steps)

        # -- the one compiled model --
        xml = S.build_mjcf(max(self.image_size, self.render_size))
        self._xml_digest = hashlib.sha256(xml.encode()).hexdigest()
        self.model = mujoco.MjModel.from_xml_string(xml)
        S.pin_at_centre_of_mass(self.model)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._obj_body = [m.body(body_name(o.name)).id for o in OBJECTS]
        self._obj_qadr = [int(m.jnt_qposadr[m.joint(body_name(o.name) + "_free").id]) for o in OBJECTS]
        self._obj_vadr = [int(m.jnt_dofadr[m.joint(body_name(o.name) + "_free").id]) for o in OBJECTS]
        self._obj_geom = [m.geom(body_name(o.name)).id for o in OBJECTS]
        self._park_eq = [m.equality("park_" + body_name(o.name)).id for o in OBJECTS]
        self._rec_body = [m.body(body_name(r.name)).id for r in RECEPTACLES]
        self._rec_nominal = (m.body_pos.copy(), m.body_quat.copy())
        self._ee_qadr = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("ee_x", "ee_y", "ee_z")]
        self._ee_vadr = [int(m.jnt_dofadr[m.joint(n).id]) for n in ("ee_x", "ee_y", "ee_z")]
        self._finger_qadr = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("finger_left", "finger_right")]
        self._gripper_bodies = {m.body(n).id for n in ("gripper", "finger_left", "finger_right")}
        # Each catalogue item's geoms (its whole subtree), so absent (parked) items can skip rendering.
        item_root = {b: name for b, name in zip(self._obj_body + self._rec_body, ITEM_NAMES)}
        self._item_geoms = {name: np.flatnonzero([item_root.get(int(m.body_rootid[b])) == name for b in m.geom_bodyid])
                            for name in ITEM_NAMES}
        self._geom_group = m.geom_group.copy()

        # -- spaces --
        n_items = len(ITEM_NAMES)
        obs = {"proprio": spaces.Box(-np.inf, np.inf, (8,), np.float32)}
        if self.include_privileged:
            obs["object_state"] = spaces.Box(-np.inf, np.inf, (n_items * OBJECT_ROW,), np.float32)
        if "image" in obs_mode:
            for cam in cameras:
                obs[image_key(cam)] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        obs["instruction"] = spaces.Text(INSTRUCTION_MAX_LEN, min_length=1, charset=INSTRUCTION_CHARSET)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

        self._token = next(_ENV_TOKENS)  # which env a shared renderer last drew (ids can be reused)
        self._texture_stamp = 0  # bumped at every reset: DR may have changed the textures
        self.task: Task | None = None
        self._target = S.EE_HOME.copy()
        self._steps, self._closing = 0, False
        self._failure_event: dict | None = None  # the episode's first failure event (module docstring)
        self._event_ref: dict = {}  # reset-time reference for the failure events (_reset_event_ref)
        self._saved_state: np.ndarray | None = None  # physics state before a block of substeps (_substeps)
        self.episode_seed: int | None = None
        # Set by DomainRandomization: fn(env) applying placement / pre-placement on the nominal layout.
        self.dr_layout_hook = None

    # ------------------------------------------------------------------ DR hooks (see the module docstring)
    def dr_scene(self, episode: bool = True):
        """The ``SceneInfo`` for DR: the current episode's items, or (``episode=False``) every catalogue item."""
        return self._scene_info(self.task if episode else None)

    def mujoco_renderers(self) -> list:
        return []  # this env uploads its (randomized) textures itself whenever it renders (_claim)

    # ------------------------------------------------------------------ setup helpers
    def _scene_info(self, task: Task | None):
        """What the randomizer may touch: at bind every catalogue item, per episode the present ones."""
        from realgap.randomization import SceneInfo

        objects = task.objects if task else OBJECT_NAMES
        recs = task.receptacles if task else tuple(r.name for r in RECEPTACLES)
        return SceneInfo(
            object_bodies=tuple(body_name(o) for o in objects),
            receptacle_bodies=tuple(body_name(r) for r in recs),
            target_object=body_name(task.target_object) if task else None,
            target_receptacle=body_name(task.target_receptacle) if task else None,
            receptacle_inner_half_extents={
                body_name(r): self._inner_half_extents(r) for r in recs
            },
            receptacle_floor_z={body_name(r): S.RECEPTACLE_FLOOR for r in recs},
            table_bounds=S.TABLE_BOUNDS,
            table_z=0.0,
            object_joints={body_name(o): body_name(o) + "_free" for o in objects},
            cameras=CAMERAS,
            lights=("main",),
            presence_rows={"object_state": OBJECT_ROW},  # sensing noise never touches flags / absent rows
        )

    @staticmethod
    def _inner_half_extents(name: str) -> tuple[float, float]:
        spec = receptacle_spec(name)
        if spec.round:  # the square inscribed in the circle
            return (spec.inner[0] / np.sqrt(2),) * 2
        return tuple(spec.inner)

    @property
    def max_episode_steps(self) -> int:
        return self._max_steps

    @max_episode_steps.setter
    def max_episode_steps(self, n: int) -> None:
        # gym.make(..., max_episode_steps=n) keeps n for its TimeLimit wrapper and never passes it to
        # the constructor; realgap.envs.make sets it here so the env reports "timeout" itself.
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise RealgapError(f"max_episode_steps: {n!r} must be a positive integer")
        self._max_steps = int(n)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        self.task = make_task(self.episode_seed, self.object_pool, self.receptacle_pool, self.task_variant)
        m, d = self.model, self.data
        m.body_pos[:], m.body_quat[:] = self._rec_nominal  # receptacles back to their park poses
        self._texture_stamp += 1  # DR may have changed the textures: upload them at the next render
        mujoco.mj_resetData(m, d)  # objects at qpos0 (parked, pinned), warning counters cleared
        self._write_nominal_layout(self.task)
        self._hide_absent_items(self.task)
        if self.dr_layout_hook is not None:  # DR: placement / pre-placement on the nominal layout
            self.dr_layout_hook(self)

        self._target = S.EE_HOME.copy()
        d.qpos[self._ee_qadr] = self._target
        d.qpos[self._finger_qadr] = S.FINGER_OPEN
        d.ctrl[:3], d.ctrl[3:5] = self._target, S.FINGER_OPEN
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=S.N_SUBSTEPS)  # let objects settle onto the table

        self._steps, self._closing = 0, False
        self._reset_event_ref()
        # dr_params: filled in by DomainRandomization (what every axis applied); empty without DR
        info = {"task": self.task.to_dict(), "dr_params": {}, "episode_seed": self.episode_seed}
        return self._observe(), info

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        m, d = self.model, self.data
        ee = d.qpos[self._ee_qadr]
        target = self._target + action[:3] * MAX_EE_STEP
        target = np.clip(target, ee - MAX_TARGET_LEAD, ee + MAX_TARGET_LEAD)  # no wind-up when blocked
        self._target = np.clip(target, S.WORKSPACE_LOW, S.WORKSPACE_HIGH)
        d.ctrl[:3] = self._target
        d.ctrl[3:5] = S.FINGER_CLOSED if action[3] > 0 else S.FINGER_OPEN
        self._closing = action[3] > 0
        self._substeps()
        self._steps += 1

        unstable = self._instability()
        success = not unstable and self._success()
        terminated = success
        truncated = bool(unstable) or (not success and self._steps >= self.max_episode_steps)
        info = {"is_success": bool(success)}
        if unstable:
            info["termination_reason"] = f"unstable: {unstable}"
        elif success:
            info["termination_reason"] = "success"
        elif truncated:
            info["termination_reason"] = "timeout"
        if self._failure_event is None and not unstable and not success:
            self._failure_event = self._detect_failure_event()
        if self._failure_event is not None:
            info["failure_event"] = dict(self._failure_event)
        obs = self._observe()
        if unstable:  # keep the observation inside its space; the episode is over anyway
            for k, v in obs.items():
                if isinstance(v, np.ndarray) and v.dtype == np.float32:
                    obs[k] = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        return obs, float(success), terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render("front", self.render_size)

    def render_frames(self) -> dict[str, np.ndarray]:
        """The image observations of the current state (``image_<cam>``), whatever ``obs_mode``: the suite
        renders the frames of the episodes it keeps from saved states, after the fact."""
        return {image_key(cam): self._render(cam, self.image_size) for cam in self.cameras}

    def close(self):
        pass  # the renderers are shared by the process's envs (_SHARED_RENDERERS) and live as long as it

    # ------------------------------------------------------------------ internals
    def _substeps(self) -> None:
        """``N_SUBSTEPS`` physics steps, stopping at the first sign of instability (no warning spam).

        One ``mj_step(nstep=N)`` call: a Python loop checking the warnings after every substep made the
        env cost 2x raw physics. When a warning shows up, the block is replayed one substep at a time
        from the saved state, so the result is bit-identical to stepping singly and stopping there."""
        m, d = self.model, self.data
        unstable = _UNSTABLE_CODES
        if d.warning.number[unstable].any():  # already unstable: one substep, as the singly-stepped loop did
            mujoco.mj_step(m, d)
            return
        if self._saved_state is None:
            self._saved_state = np.empty(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(m, d, self._saved_state, mujoco.mjtState.mjSTATE_INTEGRATION)
        warnings = d.warning.number.copy(), d.warning.lastinfo.copy()
        mujoco.mj_step(m, d, nstep=S.N_SUBSTEPS)
        if not d.warning.number[unstable].any():
            return
        mujoco.mj_setState(m, d, self._saved_state, mujoco.mjtState.mjSTATE_INTEGRATION)
        d.warning.number[:], d.warning.lastinfo[:] = warnings
        handler = mujoco.get_mju_user_warning()
        mujoco.set_mju_user_warning(lambda message: None)  # the block above printed the warning already
        try:
            for _ in range(S.N_SUBSTEPS):
                mujoco.mj_step(m, d)
                if d.warning.number[unstable].any():
                    break
        finally:
            mujoco.set_mju_user_warning(handler)

    def _write_nominal_layout(self, task: Task) -> None:
        m, d = self.model, self.data
        for name, slot in zip(task.receptacles, task.receptacle_slots):
            b = self._rec_body[RECEPTACLES.index(receptacle_spec(name))]
            m.body_pos[b] = (*S.RECEPTACLE_SLOTS[slot], 0.0)
            m.body_quat[b] = (1.0, 0.0, 0.0, 0.0)
        for name, slot in zip(task.objects, task.object_slots):
            i = OBJECT_NAMES.index(name)
            d.eq_active[self._park_eq[i]] = 0
            a = self._obj_qadr[i]
            d.qpos[a : a + 3] = (*S.OBJECT_SLOTS[slot], object_spec(name).half_height)
            d.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)
        mujoco.mj_kinematics(m, d)

    def _hide_absent_items(self, task: Task) -> None:
        """Parked items are far outside every camera, yet each costs the software rasterizer a draw call
        (about a fifth of a 96x96 frame): put their geoms in a group the renderer's default option hides.
        Rendering only (no physics field); the frames are unchanged."""
        m, present = self.model, set(task.objects) | set(task.receptacles)
        m.geom_group[:] = self._geom_group
        for name, geoms in self._item_geoms.items():
            if name not in present:
                m.geom_group[geoms] = HIDDEN_GEOM_GROUP

    def _instability(self) -> str:
        d = self.data
        for code, what in UNSTABLE_WARNINGS.items():
            if d.warning[code].number > 0:
                return f"{what} (MuJoCo warning at t={d.time:.3f}s)"
        for field in ("qpos", "qvel", "qacc"):
            if not np.all(np.isfinite(getattr(d, field))):
                return f"non-finite {field}"
        return ""

    def _reset_event_ref(self) -> None:
        """Where each present object settled at reset: what the failure events compare against."""
        d, task = self.data, self.task
        self._failure_event = None
        objs = [OBJECT_NAMES.index(o) for o in task.objects]
        self._event_ref = {
            "xy": {i: d.xpos[self._obj_body[i], :2].copy() for i in objs},
            # an object already tipped when the episode starts (pre-placement) is not knocked over by the policy
            "upright": [i for i in objs if d.xmat[self._obj_body[i]][8] > KNOCKED_TILT_COS],
            "target_z": float(d.xpos[self._obj_body[OBJECT_NAMES.index(task.target_object)], 2]),
            "lifted": False,
        }

    def _receptacle_holding(self, i: int) -> str | None:
        """The present receptacle whose inside (inner footprint, bottom below the rim) holds object ``i``."""
        d, task = self.data, self.task
        p, half_h = d.xpos[self._obj_body[i]], OBJECTS[i].half_height
        for name in task.receptacles:
            spec = receptacle_spec(name)
            rb = self._rec_body[RECEPTACLES.index(spec)]
            local = d.xmat[rb].reshape(3, 3).T @ (p - d.xpos[rb])
            inside = np.hypot(local[0], local[1]) < spec.inner[0] if spec.round else (
                abs(local[0]) < spec.inner[0] and abs(local[1]) < spec.inner[1])
            if inside and 0.0 < local[2] < spec.height + half_h - 0.005:
                return name
        return None

    def _detect_failure_event(self) -> dict | None:
        """The failure event visible in the current state, if any (read-only; see the module docstring)."""
        d, task, ref = self.data, self.task, self._event_ref
        t = OBJECT_NAMES.index(task.target_object)

        def event(kind: str, i: int) -> dict:
            return {"type": kind, "step": int(self._steps), "item": OBJECT_NAMES[i]}

        for i in ref["upright"]:
            if d.xmat[self._obj_body[i]][8] < KNOCKED_TILT_COS and not (
                    i == t and self._receptacle_holding(t) == task.target_receptacle):
                return event("knocked_over", i)
        if d.xpos[self._obj_body[t], 2] > ref["target_z"] + DROP_LIFT:
            ref["lifted"] = True
        v = self._obj_vadr[t]
        if np.linalg.norm(d.qvel[v : v + 3]) < RESTING_SPEED:
            target_in = self._receptacle_holding(t)
            kind = "dropped" if target_in is None and ref["lifted"] else (
                "wrong_receptacle" if target_in not in (None, task.target_receptacle) else None)
            if kind and not self._touches_gripper(self._obj_geom[t]):  # the costly check last: released
                return event(kind, t)
        for i, xy in ref["xy"].items():
            if i != t and np.hypot(*(d.xpos[self._obj_body[i], :2] - xy)) > DISTRACTOR_SHIFT:
                return event("distractor_moved", i)
        return None

    def _success(self) -> bool:
        """Target object resting (slow) inside the target receptacle's inner footprint (its centre),
        with its bottom below the rim, and released (gripper commanded open, no gripper contact)."""
        task, m, d = self.task, self.model, self.data
        i = OBJECT_NAMES.index(task.target_object)
        spec = receptacle_spec(task.target_receptacle)
        rb = self._rec_body[RECEPTACLES.index(spec)]
        p = d.xpos[self._obj_body[i]]
        rot = d.xmat[rb].reshape(3, 3)
        local = rot.T @ (p - d.xpos[rb])
        inside = np.hypot(local[0], local[1]) < spec.inner[0] if spec.round else (
            abs(local[0]) < spec.inner[0] and abs(local[1]) < spec.inner[1])
        # Below the rim: the object's bottom (centre minus its upright half height) is under the rim,
        # so a vial standing in a shallow tray counts, one balanced on a wall does not.
        below_rim = 0.0 < local[2] < spec.height + object_spec(task.target_object).half_height - 0.005
        v = self._obj_vadr[i]
        resting = np.linalg.norm(d.qvel[v : v + 3]) < RESTING_SPEED
        released = not self._closing and not self._touches_gripper(self._obj_geom[i])
        return bool(inside and below_rim and resting and released)

    def _touches_gripper(self, geom: int) -> bool:
        pairs = self.data.contact.geom[: self.data.ncon]  # (ncon, 2); one array op, not a loop over contacts
        others = np.concatenate([pairs[pairs[:, 0] == geom, 1], pairs[pairs[:, 1] == geom, 0]])
        return bool(np.isin(self.model.geom_bodyid[others], list(self._gripper_bodies)).any())

    def _claim(self, size: int) -> mujoco.Renderer:
        """The process's shared renderer for this scene and size, pointed at this env's model."""
        key = (self._xml_digest, size)
        renderer = _SHARED_RENDERERS.get(key)
        if renderer is None:
            renderer = _SHARED_RENDERERS[key] = mujoco.Renderer(self.model, size, size)
            renderer.realgap_user = None
            # No material reflects and shadow maps are sized 0: skip those passes (software GL pays per pass).
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                renderer.scene.flags[flag] = 0
        user = (self._token, self._texture_stamp)
        if renderer.realgap_user != user:
            # update_scene reads geom/material colours, lights and cameras from the renderer's model; the
            # GPU keeps textures, so upload this model's (same XML: same sizes, maybe randomized content).
            renderer._model = self.model
            if renderer._gl_context is not None:
                renderer._gl_context.make_current()
            for t in range(self.model.ntex):
                mujoco.mjr_uploadTexture(self.model, renderer._mjr_context, t)
            renderer.realgap_user = user
        return renderer

    def _render(self, camera: str, size: int) -> np.ndarray:
        renderer = self._claim(size)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def _observe(self) -> dict:
        d = self.data
        proprio = np.concatenate([d.qpos[self._ee_qadr], d.qvel[self._ee_vadr], d.qpos[self._finger_qadr]])
        obs = {"proprio": proprio.astype(np.float32)}
        if self.include_privileged:
            obs["object_state"] = self._object_state()
        if "image" in self.obs_mode:
            for cam in self.cameras:
                obs[image_key(cam)] = self._render(cam, self.image_size)
        obs["instruction"] = self.task.instruction
        return obs

    def _object_state(self) -> np.ndarray:
        d, task = self.data, self.task
        rows = np.zeros((len(ITEM_NAMES), OBJECT_ROW), np.float64)
        present = set(task.objects) | set(task.receptacles)
        bodies = self._obj_body + self._rec_body
        for k, name in enumerate(ITEM_NAMES):
            if name in present:
                b = bodies[k]
                yaw = yaw_of(d.xquat[b])
                rows[k] = (1.0, *d.xpos[b], np.cos(yaw), np.sin(yaw))
        return rows.reshape(-1).astype(np.float32)
