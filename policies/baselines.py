"""Scripted reference policies with known behaviour, for diagnostics (``module:factory`` policy specs).

Each wraps the scripted expert (``realgap.envs.expert.ScriptedExpert``) and changes one thing, so an
analysis that claims to tell behaviours apart can be checked against a policy whose answer is known:

- ``location_follower``: picks the object the instruction names, then places it at a memorized
  ``location`` whatever receptacle the instruction names (it acts as if the named receptacle always
  stood there) -- the deliberately location-following policy of ``realgap grounding``'s test of the test:
  ``realgap grounding policy=realgap.policies.baselines:location_follower grounding=fixed_place``;
- ``expert_to``: the expert sent to another receptacle than the instruction names;
- ``expert_holding``: the expert that never opens the gripper once it has closed it;
- ``expert_never_closing``: the expert that never closes the gripper (grasps nothing).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from realgap.envs.catalogue import ITEM_NAMES, RECEPTACLE_NAMES
from realgap.envs.expert import ScriptedExpert
from realgap.envs.place_env import OBJECT_ROW
from realgap.envs.scene import RECEPTACLE_SLOTS
from realgap.envs.tasks import instruction, parse_instruction
from realgap.errors import RealgapError

GRIPPER_MODES = ("normal", "hold", "never_close")


class RewiredExpert:
    """The scripted expert with its receptacle moved or renamed, or its gripper constrained (policy protocol)."""

    def __init__(self, location: Sequence[float] | None = None, receptacle: str | None = None, gripper: str = "normal"):
        if location is not None and len(location) != 2:
            raise RealgapError(f"location: expected (x, y), got {location!r}")
        if receptacle is not None and receptacle not in RECEPTACLE_NAMES:
            raise RealgapError(f"receptacle: unknown {receptacle!r}; known: {', '.join(RECEPTACLE_NAMES)}")
        if gripper not in GRIPPER_MODES:
            raise RealgapError(f"gripper: expected one of {GRIPPER_MODES}, got {gripper!r}")
        self.location = None if location is None else np.asarray(location, np.float64)
        self.receptacle, self.gripper = receptacle, gripper
        self.expert = ScriptedExpert()
        self._closed_once: list[bool] = []

    def reset(self, episode_seeds: Sequence[int]) -> None:
        self.expert.reset(episode_seeds)
        self._closed_once = [False] * len(episode_seeds)

    def _rewire(self, obs: dict) -> dict:
        obj, rec = parse_instruction(str(obs["instruction"]))
        obs = dict(obs)
        if self.receptacle is not None:
            rec = self.receptacle
            obs["instruction"] = instruction(obj, rec)
        if self.location is not None:  # "the named receptacle stands where I remember it"
            rows = np.array(obs["object_state"], np.float32).reshape(-1, OBJECT_ROW)
            row = rows[ITEM_NAMES.index(rec)]
            row[0], row[1:3] = 1.0, self.location
            if not np.any(row[4:6]):
                row[3:6] = (0.0, 1.0, 0.0)  # an absent row: table height, no yaw
            obs["object_state"] = rows.reshape(-1)
        return obs

    def act(self, obs: Sequence[dict], slots: Sequence[int]) -> np.ndarray:
        actions = self.expert.act([self._rewire(o) for o in obs], slots)
        for j, s in enumerate(slots):
            if self.gripper == "never_close":
                actions[j, 3] = -1.0
            elif self.gripper == "hold":
                self._closed_once[s] |= bool(actions[j, 3] > 0)
                if self._closed_once[s]:
                    actions[j, 3] = 1.0
        return actions


def location_follower(location: Sequence[float] = RECEPTACLE_SLOTS[0]) -> RewiredExpert:
    return RewiredExpert(location=location)


def expert_to(receptacle: str) -> RewiredExpert:
    return RewiredExpert(receptacle=receptacle)


def expert_holding() -> RewiredExpert:
    return RewiredExpert(gripper="hold")


def expert_never_closing() -> RewiredExpert:
    return RewiredExpert(gripper="never_close")
