"""``ScriptedExpert``: a pick-and-place state machine that implements the policy protocol.

It reads only the observation: ``proprio`` (gripper position), ``object_state`` (poses of the
present items) and the parsed ``instruction``. Motion is a saturated proportional controller
toward the waypoint of the current phase, so trajectories are smooth straight-line segments that
slow down into each waypoint -- easy for a diffusion policy to imitate. It is deterministic: the
same observation sequence gives the same actions, whatever the batch composition.

Phases: approach (above the object) -> descend -> close -> lift -> transport (above the
receptacle) -> lower -> release -> retreat. If the object slips out on the way, it starts over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from realgap.envs.catalogue import ITEM_NAMES, object_spec, receptacle_spec
from realgap.envs.place_env import MAX_EE_STEP, OBJECT_ROW
from realgap.envs.scene import FINGER_OPEN, WORKSPACE_LOW
from realgap.envs.tasks import parse_instruction

HOVER_Z = 0.12  # approach height above the table (site)
CARRY_Z = 0.16
GAIN = 0.8  # fraction of the remaining distance commanded per step (before saturation)
# Phase changes at the gripper depend only on what two consecutive observations show (the fingers
# stopped closing / are open), never on a hidden step counter: a policy imitating the expert from an
# observation history cannot see counters, and a counted wait made it re-plan the wait forever.
FINGER_CLOSING = 0.012  # m of finger travel from open that shows the close command has taken hold
PHASE_TIMEOUT = 25  # steps; a phase that stalls this long moves on (or restarts the pick)


@dataclass
class _SlotState:
    phase: str = "approach"
    steps_in_phase: int = 0
    grasp_offset: float = 0.0  # object centre z minus gripper z when grasped


class ScriptedExpert:
    """Policy protocol: ``reset(episode_seeds)`` then ``act(obs, slots)``."""

    def __init__(self, env=None, *, xy_tolerance: float = 0.006, z_tolerance: float = 0.006):
        # ``env`` is accepted so callers may write ScriptedExpert(env); it is never read: the
        # expert sees only observations, like any policy.
        self.xy_tol, self.z_tol = xy_tolerance, z_tolerance
        self._slots: list[_SlotState] = []

    def reset(self, episode_seeds: Sequence[int]) -> None:
        self._slots = [_SlotState() for _ in episode_seeds]

    def act(self, obs: Sequence[dict], slots: Sequence[int]) -> np.ndarray:
        return np.stack([self._act_one(o, self._slots[s]) for o, s in zip(obs, slots)]).astype(np.float32)

    # ------------------------------------------------------------------ one slot
    def _act_one(self, obs: dict, st: _SlotState) -> np.ndarray:
        obj_name, rec_name = parse_instruction(str(obs["instruction"]))
        rows = np.asarray(obs["object_state"], np.float64).reshape(-1, OBJECT_ROW)
        obj = rows[ITEM_NAMES.index(obj_name), 1:4]
        rec = rows[ITEM_NAMES.index(rec_name), 1:4]
        ee = np.asarray(obs["proprio"][:3], np.float64)
        fingers = np.asarray(obs["proprio"][6:8], np.float64)
        obj_spec, rec_spec = object_spec(obj_name), receptacle_spec(rec_name)
        grasp_z = max(obj[2] + 0.002, WORKSPACE_LOW[2])

        def go(phase: str) -> None:
            st.phase, st.steps_in_phase = phase, 0

        st.steps_in_phase += 1
        stalled = st.steps_in_phase > PHASE_TIMEOUT
        # Transitions first (they look at where we are now), then the waypoint of the phase we are in.
        if st.phase == "approach":
            if self._near_xy(ee, obj) or stalled:
                go("descend")
        if st.phase == "descend":
            if abs(ee[2] - grasp_z) < self.z_tol or stalled:
                go("close")
        if st.phase == "close" and (float(fingers.mean()) < FINGER_OPEN - FINGER_CLOSING or stalled):
            st.grasp_offset = obj[2] - ee[2]
            go("lift")
        if st.phase == "lift":
            if ee[2] > CARRY_Z - 0.02 or stalled:
                go("transport")
        if st.phase in ("lift", "transport", "lower") and obj[2] - ee[2] < st.grasp_offset - 0.03:
            go("approach")  # the object slipped out: start the pick over
        if st.phase == "transport" and (self._near_xy(ee, rec, 2 * self.xy_tol) or stalled):
            go("lower")
        release_z = rec[2] + rec_spec.height + obj_spec.half_height + 0.012 - st.grasp_offset
        if st.phase == "lower" and (abs(ee[2] - release_z) < 2 * self.z_tol or stalled):
            go("release")
        if st.phase == "release" and (float(fingers.min()) > FINGER_OPEN - 0.004 or stalled):
            go("retreat")

        closed = st.phase in ("close", "lift", "transport", "lower")
        if st.phase == "approach":
            goal = np.array([obj[0], obj[1], HOVER_Z])
            if not self._far_xy(ee, obj, 0.03):
                goal[2] = max(ee[2], grasp_z)  # already above it: do not climb back up
        elif st.phase in ("descend", "close"):
            goal = np.array([obj[0], obj[1], grasp_z]) if st.phase == "descend" else ee.copy()
        elif st.phase == "lift":
            goal = np.array([ee[0], ee[1], CARRY_Z])
        elif st.phase == "transport":
            goal = np.array([rec[0], rec[1], CARRY_Z])
        elif st.phase in ("lower", "release"):
            goal = np.array([rec[0], rec[1], release_z]) if st.phase == "lower" else ee.copy()
        else:  # retreat
            goal = np.array([ee[0], ee[1], CARRY_Z])
        delta = np.clip(GAIN * (goal - ee) / MAX_EE_STEP, -1.0, 1.0)
        return np.array([*delta, 1.0 if closed else -1.0])

    def _near_xy(self, ee, p, tol=None) -> bool:
        return float(np.hypot(*(ee[:2] - p[:2]))) < (tol or self.xy_tol)

    @staticmethod
    def _far_xy(ee, p, dist) -> bool:
        return float(np.hypot(*(ee[:2] - p[:2]))) > dist
