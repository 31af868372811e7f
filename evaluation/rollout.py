"""Run one group of episodes: a batch of envs stepped in lockstep, one batched policy call per step.

A group is the unit of work of every executor. Its composition (condition, seeds) is fixed by the
suite plan, never by the number of workers, so an episode's outcome is the same wherever it runs.

Per-step layout of a returned episode (what the episode store keeps): T+1 rows for an episode of T
env steps. Row t holds the observation o_t (``proprio``, ``object_state``, frames ``image_<cam>``)
and the action a_t taken from it; the last row holds the final observation and a NaN action.

Faults end an episode instead of the suite; ``termination_reason`` says which:
``policy_error`` (act() raised or returned a wrong shape), ``nan_action`` (non-finite action),
``sim_error`` (reset/step raised), besides the env's own reasons (success, timeout, unstable, ...).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

STATE_KEYS = ("proprio", "object_state")


@dataclass(frozen=True)
class GroupTask:
    group: int  # index in the suite plan
    condition: str
    seeds: tuple[int, ...]
    env_id: str
    env_kwargs: dict  # passed to gymnasium.make, randomization included
    frames: str = "none"  # none | failures | all
    frame_seeds: frozenset = field(default_factory=frozenset)  # seeds whose frames are always kept
    record_chunks: bool = False


@dataclass
class Episode:
    condition: str
    seed: int
    steps: dict[str, np.ndarray]
    info: dict[str, Any]


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


class _Slot:
    """Recording state of one env in the batch."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rows: dict[str, list[np.ndarray]] = {}
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.chunks: list[tuple[int, np.ndarray]] = []  # (step, (K, horizon, action_dim))
        self.reset_info: dict = {}
        self.done = False
        self.success = False
        self.reason = ""
        self.error = ""
        self.end_time = 0.0

    def observe(self, obs: dict, keys: Sequence[str]) -> None:
        for k in keys:
            self.rows.setdefault(k, []).append(np.asarray(obs[k]))

    def finish(self, reason: str, success: bool = False, error: str = "") -> None:
        self.done, self.reason, self.success, self.error = True, reason, bool(success), error
        self.end_time = time.perf_counter()


def _record_keys(obs: dict, frames: str) -> list[str]:
    keys = [k for k in STATE_KEYS if k in obs]
    if frames != "none":
        keys += sorted(k for k in obs if k.startswith("image_"))
    return keys


def _zero_obs(space, keys: Sequence[str]) -> dict:
    return {k: np.zeros(space[k].shape, space[k].dtype) for k in keys if k in space.spaces}


def run_group(task: GroupTask, policy, make_env: Callable[[str, dict], Any]) -> list[Episode]:
    """Roll out every seed of ``task`` with ``policy``; returns one Episode per seed, in seed order."""
    envs = [make_env(task.env_id, task.env_kwargs) for _ in task.seeds]
    slots = [_Slot(s) for s in task.seeds]
    t0 = time.perf_counter()
    obs: list[dict | None] = [None] * len(envs)
    keys: list[str] | None = None
    action_dim = int(np.prod(envs[0].action_space.shape))
    try:
        for i, (env, slot) in enumerate(zip(envs, slots)):
            try:
                obs[i], slot.reset_info = env.reset(seed=int(slot.seed))
                keys = keys or _record_keys(obs[i], task.frames)
            except Exception as e:
                slot.finish("sim_error", error=f"reset: {_error_text(e)}")
        if keys is None:  # every reset failed: record zero observations so the episode still has a row
            keys = [k for k in STATE_KEYS if k in envs[0].observation_space.spaces]
        for i, slot in enumerate(slots):
            if slot.done:
                obs[i] = _zero_obs(envs[i].observation_space, keys)
            slot.observe(obs[i], keys)

        policy.reset([int(s) for s in task.seeds])
        step = 0
        while True:
            active = [i for i, s in enumerate(slots) if not s.done]
            if not active:
                break
            try:
                actions = np.asarray(policy.act([obs[i] for i in active], active), dtype=np.float32)
                if actions.shape != (len(active), action_dim):
                    raise ValueError(f"act() returned shape {actions.shape}, expected {(len(active), action_dim)}")
            except Exception as e:
                for i in active:
                    slots[i].finish("policy_error", error=f"step {step}: {_error_text(e)}")
                break
            if task.record_chunks:
                chunks = getattr(policy, "last_chunks", None)
                for j, i in enumerate(active):
                    if chunks is not None and chunks[j] is not None:
                        slots[i].chunks.append((step, np.asarray(chunks[j], np.float32)))
            for j, i in enumerate(active):
                slot, action = slots[i], actions[j]
                if not np.all(np.isfinite(action)):
                    slot.finish("nan_action", error=f"step {step}: non-finite action {action.tolist()}")
                    continue
                try:
                    obs[i], reward, terminated, truncated, info = envs[i].step(action)
                except Exception as e:
                    slot.finish("sim_error", error=f"step {step}: {_error_text(e)}")
                    continue
                slot.actions.append(action)
                slot.rewards.append(float(reward))
                slot.observe(obs[i], keys)
                if terminated or truncated:
                    reason = info.get("termination_reason") or ("timeout" if truncated else "terminated")
                    slot.finish(str(reason), success=bool(info.get("is_success", False)))
            step += 1
    finally:
        for env in envs:
            try:
                env.close()
            except Exception:
                traceback.print_exc()
    return [_to_episode(task, slot, t0, action_dim) for slot in slots]


def _keep_frames(task: GroupTask, slot: _Slot) -> bool:
    if task.frames == "all":
        return True
    if task.frames == "failures":
        return (not slot.success) or slot.seed in task.frame_seeds
    return False


def _to_episode(task: GroupTask, slot: _Slot, t0: float, action_dim: int) -> Episode:
    length = len(slot.actions)
    actions = np.full((length + 1, action_dim), np.nan, np.float32)
    if length:
        actions[:length] = np.stack(slot.actions)
    rewards = np.full((length + 1,), np.nan, np.float32)
    rewards[:length] = slot.rewards
    steps = {"action": actions, "reward": rewards}
    keep = _keep_frames(task, slot)
    for key, rows in slot.rows.items():
        # Frames of episodes not kept are dropped here; the store writer pads them with zeros.
        if key.startswith("image_") and not keep:
            continue
        steps[key] = np.stack(rows)
    info = {
        "condition": task.condition,
        "seed": int(slot.seed),
        "group": task.group,
        "success": bool(slot.success),
        "length": length,
        "termination_reason": slot.reason,
        "error": slot.error,
        "wall_time_s": round(slot.end_time - t0, 4),
        "frames": keep and task.frames != "none",
        "task": slot.reset_info.get("task"),
        "dr_params": slot.reset_info.get("dr_params"),
    }
    if task.record_chunks and slot.chunks:
        # data/chunks: the K chunks sampled at each replan row, NaN on the other rows
        chunks = np.full((length + 1, *slot.chunks[0][1].shape), np.nan, np.float32)
        for step, c in slot.chunks:
            chunks[step] = c
        steps["chunks"] = chunks
    return Episode(task.condition, int(slot.seed), steps, info)
