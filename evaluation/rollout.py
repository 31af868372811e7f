"""The one rollout loop: a batch of envs stepped in lockstep, one batched policy call per step.

Every caller runs episodes through ``run_batch`` (or ``run_group``, which builds the envs with
``realgap.envs.make`` first): the suite's executors, ``realgap collect``, ``realgap expert`` and
training-time success checks (``realgap.policies.rollout``).

A group is the unit of work of every executor. Its composition (condition, seeds) is fixed by the
suite plan, never by the number of workers, so an episode's outcome is the same wherever it runs.

Per-step layout of a returned episode (what the episode store keeps): T+1 rows for an episode of T
env steps. Row t holds the observation o_t and the action a_t taken from it; the last row holds the
final observation and a NaN action. Observations are stored whatever the env's space: every numeric
array of a ``Dict`` observation under its own key (``proprio``, ``object_state``, ...; text such as
``instruction`` is not an array), any other observation under ``obs``. Frames: the observation's
``image_<cam>`` keys; an env without image observations but made with ``render_mode="rgb_array"``
gives ``image_render`` from ``env.render()``.

Success is the env's ``info[success_key]`` (default ``is_success``). An episode ends as a success the
first step that key is true, even where the env would go on (as LeRobot's and Meta-World's eval
loops do); ``Episode.success_reported`` says whether the env reported the key at all.

Faults end an episode instead of the suite; ``termination_reason`` says which, besides the env's own
reasons (success, timeout, unstable, ...):
- ``policy_error``: act() raised or returned a wrong shape. act() serves the whole batch, so one raise
  ends every episode of the batch. Each of them is then offered to act() alone once: an episode
  whose solo call works is ``collateral`` (info) -- it ended only because another slot raised.
  ``suite.batch_envs=1`` isolates every episode.
- ``nan_action``: a non-finite action.
- ``action_out_of_range``: an action outside the env's ``Box`` action space (beyond 1e-6, float
  rounding) with ``action_bounds="fault"`` (the default). With ``"clip"`` it is clipped instead and
  the episode's ``clipped_steps`` counts how often.
- ``sim_error``: reset/step raised.
"""

from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from realgap.envs import is_image_key

ACTION_BOUNDS = ("fault", "clip")
BOUNDS_TOLERANCE = 1e-6
FAULT_REASONS = ("policy_error", "nan_action", "action_out_of_range", "sim_error")  # the loop's own faults


@dataclass(frozen=True)
class GroupTask:
    group: int  # index in the suite plan
    condition: str
    seeds: tuple[int, ...]
    env_id: str
    env_kwargs: dict  # realgap.envs.make kwargs: the env's own plus "randomization" (a DR config or None)
    frames: str = "none"  # none | failures | all
    frame_seeds: frozenset = field(default_factory=frozenset)  # seeds whose frames are always kept
    record_chunks: bool = False
    success_key: str = "is_success"
    action_bounds: str = "fault"  # fault | clip
    # Env kwargs that give frames, when the episodes run without them: the episodes that keep frames are
    # replayed (seed + stored actions) in such an env afterwards, so only kept frames are ever rendered.
    frame_env_kwargs: dict | None = None


@dataclass
class Episode:
    condition: str
    seed: int
    steps: dict[str, np.ndarray]
    info: dict[str, Any]
    success_reported: bool = False  # the env's info held the success key at some step (not stored)
    info_keys: tuple[str, ...] = ()  # the keys of the env's last info (not stored; for error messages)


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
        self.instruction: str | None = None
        self.done = False
        self.success = False
        self.reason = ""
        self.error = ""
        self.collateral = False
        self.clipped = 0
        self.reported = False
        self.info_keys: tuple[str, ...] = ()
        self.end_time = 0.0
        self.policy_info: dict = {}
        self.failure_event: dict | None = None  # the env's info["failure_event"] (first one), if it emits any

    def observe(self, rows: dict[str, np.ndarray]) -> None:
        for k, v in rows.items():
            self.rows.setdefault(k, []).append(v)

    def finish(self, reason: str, success: bool = False, error: str = "") -> None:
        self.done, self.reason, self.success, self.error = True, reason, bool(success), error
        self.end_time = time.perf_counter()


def _is_array(v) -> bool:
    return isinstance(v, (np.ndarray, np.number, int, float, bool)) and np.asarray(v).dtype.kind in "biuf"


class _Recorder:
    """Turns one env's observation into the rows the store keeps (see the module docstring)."""

    def __init__(self, env, frames: str):
        self.env, self.frames = env, frames
        # Per-step render() only when every episode keeps frames; with "failures" only the kept episodes
        # are rendered, afterwards (_Snapshots, or replay_frames).
        self.render = frames == "all" and getattr(env, "render_mode", None) == "rgb_array"

    def rows(self, obs) -> dict[str, np.ndarray]:
        if isinstance(obs, dict):
            rows = {k: np.asarray(v) for k, v in obs.items()
                    if _is_array(v) and (self.frames != "none" or not is_image_key(k))}
        else:
            rows = {"obs": np.asarray(obs)}
        if self.render and not any(is_image_key(k) for k in rows):
            rows["image_render"] = np.asarray(self.env.render())
        return rows

    def zeros(self, like: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Rows for an env whose reset failed: zeros shaped like another slot's, else like the space."""
        if like:
            return {k: np.zeros_like(v) for k, v in like.items()}
        space = self.env.observation_space
        if hasattr(space, "spaces") and isinstance(space.spaces, dict):
            return {k: np.zeros(s.shape, s.dtype) for k, s in space.spaces.items()
                    if getattr(s, "shape", None) is not None and getattr(s, "dtype", None) is not None
                    and np.dtype(s.dtype).kind in "biuf" and (self.frames != "none" or not is_image_key(k))}
        return {"obs": np.zeros(space.shape, space.dtype)}


class _Snapshots:
    """Render the kept episodes only, after the fact, from per-step copies of what MuJoCo draws from.

    For an env whose ``unwrapped`` has a MuJoCo ``data`` and a ``render_frames()`` (realgap's env): each
    step saves the pose arrays the renderer reads (a few KB); once the episode's outcome says its frames
    are kept, they are written back one step at a time and rendered with the env's own model, which
    still holds the episode's randomization (each env of a group runs one episode). Pixel-identical
    to rendering during the run (``tests/test_render_replay.py``), without rendering what is dropped.
    """

    FIELDS = ("qpos", "xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos", "site_xmat",
              "cam_xpos", "cam_xmat", "light_xpos", "light_xdir", "subtree_com", "ten_wrapadr", "ten_wrapnum",
              "wrap_obj", "wrap_xpos", "mocap_pos", "mocap_quat", "flexvert_xpos", "time")

    def __init__(self, data, render_frames: Callable[[], dict]):
        self.data, self.render_frames = data, render_frames
        self.fields = [f for f in self.FIELDS if np.size(getattr(data, f, ())) > 0]
        self.saved: list[list] = []

    @classmethod
    def of(cls, env) -> "_Snapshots | None":
        import mujoco

        inner = env.unwrapped
        data, frames = getattr(inner, "data", None), getattr(inner, "render_frames", None)
        return cls(data, frames) if isinstance(data, mujoco.MjData) and callable(frames) else None

    def save(self) -> None:
        self.saved.append([np.copy(getattr(self.data, f)) for f in self.fields])

    def frames(self) -> dict[str, list[np.ndarray]]:
        rows: dict[str, list[np.ndarray]] = {}
        for snap in self.saved:
            for f, value in zip(self.fields, snap):
                if f == "time":
                    self.data.time = value
                else:
                    getattr(self.data, f)[...] = value
            for key, frame in self.render_frames().items():
                rows.setdefault(key, []).append(np.asarray(frame))
        self.saved.clear()
        return rows


def _bounds(env):
    space = env.action_space
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        return None
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    return None if not (np.isfinite(low).any() or np.isfinite(high).any()) else (low, high)


def run_group(task: GroupTask, policy, make_env: Callable[..., Any] | None = None) -> list[Episode]:
    """Build ``task``'s envs (``realgap.envs.make``), roll out every seed, close them; one Episode per seed."""
    if make_env is None:
        import realgap.envs as envs_mod

        make_env = envs_mod.make
    envs: list = []
    try:
        with warnings.catch_warnings():  # inapplicable DR axes were reported once, by the suite's preflight
            warnings.filterwarnings("ignore", message=r"randomization\.axes\.")
            for _ in task.seeds:
                envs.append(make_env(task.env_id, **task.env_kwargs))
        episodes = run_batch(envs, policy, task)
        if task.frame_env_kwargs is not None:
            replay_frames(task, episodes, make_env)
        return episodes
    finally:
        for env in envs:
            try:
                env.close()
            except Exception:
                traceback.print_exc()


def run_batch(envs: Sequence, policy, task: GroupTask) -> list[Episode]:
    """Roll out ``task.seeds[i]`` in ``envs[i]`` (at least as many envs as seeds) with ``policy``.

    The envs are reset here and left open. Returns one Episode per seed, in seed order.
    """
    if task.action_bounds not in ACTION_BOUNDS:
        raise ValueError(f"action_bounds: {task.action_bounds!r} is not one of {ACTION_BOUNDS}")
    envs = list(envs)[: len(task.seeds)]
    slots = [_Slot(s) for s in task.seeds]
    recorders = [_Recorder(env, task.frames) for env in envs]
    t0 = time.perf_counter()
    obs: list = [None] * len(envs)
    action_dim = int(np.prod(envs[0].action_space.shape))
    bounds = _bounds(envs[0])
    key = task.success_key

    snapshots: list = [None] * len(envs)
    first: dict | None = None
    for i, (env, slot) in enumerate(zip(envs, slots)):
        try:
            obs[i], slot.reset_info = env.reset(seed=int(slot.seed))
            rows = recorders[i].rows(obs[i])
            first = first or rows
            slot.observe(rows)
            if task.frames == "failures" and not any(is_image_key(k) for k in rows):
                snapshots[i] = _Snapshots.of(env)
                if snapshots[i] is not None:
                    snapshots[i].save()
            slot.reported = key in slot.reset_info
            if isinstance(obs[i], dict) and isinstance(obs[i].get("instruction"), str):
                slot.instruction = obs[i]["instruction"]
        except Exception as e:
            slot.finish("sim_error", error=f"reset: {_error_text(e)}")
    for i, slot in enumerate(slots):  # every episode has a first row, even one whose reset failed
        if not slot.rows:
            slot.observe(recorders[i].zeros(first))

    policy.reset([int(s) for s in task.seeds])
    step = 0
    while True:
        active = [i for i, s in enumerate(slots) if not s.done]
        if not active:
            break
        try:
            actions = np.asarray(policy.act([obs[i] for i in active], active), dtype=np.float32)
        except Exception as e:
            _policy_error(policy, obs, slots, active, f"step {step}: {_error_text(e)}")
            break
        if actions.shape != (len(active), action_dim):
            for i in active:
                slots[i].finish("policy_error", error=f"step {step}: act() returned shape {actions.shape}, "
                                                      f"expected {(len(active), action_dim)}")
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
            if bounds is not None:
                low, high = bounds
                if np.any(action < low - BOUNDS_TOLERANCE) or np.any(action > high + BOUNDS_TOLERANCE):
                    if task.action_bounds == "fault":
                        slot.finish("action_out_of_range", error=f"step {step}: action {action.tolist()} outside "
                                                                 f"the action space [{low.tolist()}, {high.tolist()}]")
                        continue
                    slot.clipped += 1
                action = np.clip(action, low, high).astype(np.float32)  # rounding excess never reaches the env
            try:
                obs[i], reward, terminated, truncated, info = envs[i].step(action)
                rows = recorders[i].rows(obs[i])
            except Exception as e:
                slot.finish("sim_error", error=f"step {step}: {_error_text(e)}")
                continue
            slot.actions.append(action)
            slot.rewards.append(float(reward))
            slot.observe(rows)
            if snapshots[i] is not None:
                snapshots[i].save()
            slot.reported = slot.reported or key in info
            slot.info_keys = tuple(info)
            if slot.failure_event is None and isinstance(info.get("failure_event"), dict):
                slot.failure_event = dict(info["failure_event"])
            success = bool(info.get(key, False))
            if success or terminated or truncated:
                reason = info.get("termination_reason") or ("success" if success else "timeout" if truncated else "terminated")
                slot.finish(str(reason), success=success)
        step += 1
    for slot, snap in zip(slots, snapshots):
        if snap is not None:
            if _keep_frames(task, slot):
                slot.rows.update(snap.frames())
            snap.saved.clear()
    report = getattr(policy, "episode_info", None)  # e.g. instruction words the policy does not know
    if callable(report):
        for i, slot in enumerate(slots):
            try:
                slot.policy_info = dict(report(i))
            except Exception:
                pass
    return [_to_episode(task, slot, t0, action_dim) for slot in slots]


def replay_frames(task: GroupTask, episodes: list[Episode], make_env: Callable[..., Any]) -> None:
    """Give each episode that keeps frames but ran without them its frames: replay its seed and stored
    actions in an env made with ``task.frame_env_kwargs``. Episodes are deterministic per seed and actions
    (DR, sensing noise and the task all come from the seed), so the frames are those a rendered run shows
    (tested pixel for pixel). A replay that cannot follow the stored episode leaves it without frames."""
    todo = [ep for ep in episodes if ep.info["frames"] and not any(is_image_key(k) for k in ep.steps)]
    if not todo:
        return
    for ep in todo:  # a fresh env per episode, as in the run: renderers may keep state between episodes
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"randomization\.axes\.")
            env = make_env(task.env_id, **task.frame_env_kwargs)
        try:
            recorder, length = _Recorder(env, "all"), ep.info["length"]
            obs, _ = env.reset(seed=ep.seed)
            rows = [recorder.rows(obs)]
            for action in ep.steps["action"][:length]:
                obs, *_ = env.step(action)
                rows.append(recorder.rows(obs))
        except Exception as e:
            ep.info["frames"] = False
            ep.info["frames_error"] = f"replay: {_error_text(e)}"
            continue
        finally:
            env.close()
        for key in (k for k in rows[0] if is_image_key(k)):
            ep.steps[key] = np.stack([r[key] for r in rows])


def _policy_error(policy, obs: list, slots: list[_Slot], active: list[int], error: str) -> None:
    """End every active episode as ``policy_error``; mark as collateral those whose solo act() works."""
    solo_ok = {}
    for i in active:  # the batch is over either way, so the policy's state no longer matters
        try:
            np.asarray(policy.act([obs[i]], [i]))
            solo_ok[i] = True
        except Exception:
            solo_ok[i] = False
    culprits = [i for i in active if not solo_ok[i]]
    for i in active:
        slots[i].finish("policy_error", error=error)
        # no slot fails alone: the batch as a whole failed, so none is collateral
        slots[i].collateral = bool(culprits) and solo_ok[i]


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
        if is_image_key(key) and not keep:
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
        "collateral": slot.collateral,
        "wall_time_s": round(slot.end_time - t0, 4),
        "frames": keep and task.frames != "none",
        "task": slot.reset_info.get("task"),
        "dr_params": slot.reset_info.get("dr_params"),
    }
    if slot.instruction is not None:
        info["instruction"] = slot.instruction
    if slot.policy_info:
        info["policy"] = slot.policy_info
    if slot.failure_event is not None:
        info["failure_event"] = slot.failure_event
    if task.action_bounds == "clip":
        info["clipped_steps"] = slot.clipped
    if task.record_chunks and slot.chunks:
        # data/chunks: the K chunks sampled at each replan row, NaN on the other rows
        chunks = np.full((length + 1, *slot.chunks[0][1].shape), np.nan, np.float32)
        for step, c in slot.chunks:
            chunks[step] = c
        steps["chunks"] = chunks
    return Episode(task.condition, int(slot.seed), steps, info, success_reported=slot.reported,
                   info_keys=slot.info_keys)
