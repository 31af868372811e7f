"""A suite's plan: named conditions, paired episode seeds, and the fixed groups of work.

Every condition runs the SAME seeds (paired comparisons). The (condition, seed) list is cut into
groups of ``batch_envs`` episodes per condition; the cut depends only on the suite config, never on
the number of workers, so each group always runs with the same composition.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from realgap.errors import RealgapError

from .rollout import ACTION_BOUNDS, GroupTask

FRAME_MODES = ("none", "failures", "all")


@dataclass(frozen=True)
class Condition:
    name: str
    randomization: dict | None  # plain dict handed to the env, None = the env's nominal
    env_kwargs: dict | None = None  # extra env kwargs of this condition only (e.g. a grounding task_variant)


@dataclass(frozen=True)
class Plan:
    name: str
    conditions: tuple[Condition, ...]
    seeds: tuple[int, ...]
    batch_envs: int
    env_id: str
    env_kwargs: dict
    frames: str
    frame_seeds: frozenset
    record_chunks: bool
    baseline: str
    policy: dict = field(default_factory=dict)  # policy_fingerprint(): spec, kwargs, checkpoint digests
    success_key: str = "is_success"  # info key of the env's success signal
    frame_kwargs: dict = field(default_factory=dict)  # env kwargs that make frames (images / render_mode)
    action_bounds: str = "fault"  # an action outside the action space: fault | clip (rollout.py)

    @property
    def n_episodes(self) -> int:
        return len(self.conditions) * len(self.seeds)

    def env_kwargs_for(self, cond: Condition, frames: bool | None = None) -> dict:
        """The condition's env kwargs; ``frames`` adds the frame kwargs (default: when every episode keeps
        frames). With ``record_frames=failures`` episodes run without rendering and the kept ones are
        replayed with frames afterwards (``rollout.replay_frames``)."""
        kwargs = dict(self.env_kwargs)
        if cond.randomization is not None:
            kwargs["randomization"] = cond.randomization
        kwargs.update(cond.env_kwargs or {})
        if frames if frames is not None else self.frames == "all":
            kwargs.update(self.frame_kwargs)
        return kwargs

    def groups(self) -> list[GroupTask]:
        tasks = []
        for cond in self.conditions:
            kwargs = self.env_kwargs_for(cond)
            for start in range(0, len(self.seeds), self.batch_envs):
                tasks.append(GroupTask(
                    group=len(tasks), condition=cond.name, seeds=self.seeds[start:start + self.batch_envs],
                    env_id=self.env_id, env_kwargs=kwargs, frames=self.frames,
                    frame_env_kwargs=self.env_kwargs_for(cond, True) if self.frames == "failures" and self.frame_kwargs else None,
                    frame_seeds=self.frame_seeds, record_chunks=self.record_chunks,
                    success_key=self.success_key, action_bounds=self.action_bounds,
                ))
        return tasks

    def fingerprint(self) -> dict:
        """Everything that decides the episodes' outcomes (compared on --resume)."""
        return {
            "conditions": [[c.name, c.randomization, *([c.env_kwargs] if c.env_kwargs else [])]
                           for c in self.conditions],  # a list keeps the order
            "seeds": list(self.seeds),
            "batch_envs": self.batch_envs,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "frames": self.frames,
            "frame_seeds": sorted(self.frame_seeds),
            "record_chunks": self.record_chunks,
            "policy": self.policy,
            "success_key": self.success_key,
            "frame_kwargs": self.frame_kwargs,
            "action_bounds": self.action_bounds,
        }


def policy_fingerprint(policy: Any) -> dict:
    """What decides the policy's actions: its spec, its kwargs and, for a checkpoint folder, the
    sha256 of each file a rollout loads (so retraining into the same folder is a different policy)."""
    policy = policy if isinstance(policy, dict) else {"spec": policy}
    spec, kwargs = policy.get("spec"), policy.get("kwargs") or {}
    out = {"spec": spec, "kwargs": kwargs}
    if isinstance(spec, str) and spec and spec != "expert":
        from .policy_loader import checkpoint_path

        folder = checkpoint_path(spec)
        if folder is not None:
            from realgap.policies.checkpoint import checkpoint_digests

            out["files"] = checkpoint_digests(folder)
    return out


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_randomization(name: str, field: str) -> dict:
    """Compose ``conf/randomization/<name>.yaml`` (its Hydra defaults included) as a plain dict.

    Composed once per process while the config files are unchanged: a Hydra compose costs ~40 ms of
    CPU, the default suite names ``default`` in 7 conditions, and a study plans many suites."""
    key = (name, _conf_stamp())
    if key not in _RANDOMIZATIONS:
        _RANDOMIZATIONS[key] = _compose_randomization(name, field)
    return copy.deepcopy(_RANDOMIZATIONS[key])


_RANDOMIZATIONS: dict = {}  # (name, _conf_stamp()) -> composed randomization config


def _conf_stamp() -> tuple:
    """(path, mtime, size) of every file of realgap's config tree: changes when a config file does."""
    from pathlib import Path

    import realgap

    files = sorted(Path(realgap.__file__).parent.joinpath("conf").rglob("*.yaml"))
    return tuple((str(f), *((st := f.stat()).st_mtime_ns, st.st_size)) for f in files)


def _compose_randomization(name: str, field: str) -> dict:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="realgap.conf", version_base="1.3"):
            cfg = compose(overrides=[f"+randomization={name}"])
    except (HydraException, OmegaConfBaseException) as e:
        raise RealgapError(f"{field}: unknown randomization config '{name}' ({str(e).splitlines()[0]})") from e
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg.randomization, resolve=True)


def _condition(name: str, spec: Any) -> Condition:
    field = f"suite.conditions.{name}"
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise RealgapError(f"{field}: expected a mapping with 'randomization', got {spec!r}")
    unknown = set(spec) - {"randomization", "only", "scale", "env_kwargs"}
    if unknown:
        raise RealgapError(f"{field}: unknown key(s) {sorted(unknown)} (allowed: randomization, only, scale, env_kwargs)")
    env_kwargs = spec.get("env_kwargs")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise RealgapError(f"{field}.env_kwargs: expected a mapping of env kwargs, got {env_kwargs!r}")
    rand = spec.get("randomization")
    if isinstance(rand, str):
        rand = load_randomization(rand, f"{field}.randomization")
    elif rand is not None and not isinstance(rand, dict):
        raise RealgapError(f"{field}.randomization: expected a config name or a mapping, got {rand!r}")
    rand = copy.deepcopy(rand)
    if spec.get("only") is not None:
        axes = (rand or {}).get("axes") or {}
        only = spec["only"]
        if only not in axes:
            raise RealgapError(f"{field}.only: unknown axis '{only}' (the randomization has: {', '.join(sorted(axes)) or 'none'})")
        for axis, axis_cfg in axes.items():
            axis_cfg["enabled"] = axis == only
    if spec.get("scale") is not None:
        scale = spec["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise RealgapError(f"{field}.scale: expected a number >= 0, got {scale!r}")
        if rand is None:
            raise RealgapError(f"{field}.scale: needs a randomization to scale")
        rand = _scale_enabled_axes(rand, float(scale), f"{field}.scale")
    return Condition(name, rand, copy.deepcopy(env_kwargs) or None)


def _scale_enabled_axes(rand: dict, scale: float, field: str) -> dict:
    """The randomization with ``scale`` applied to its enabled axes only (and global scale 1).

    The Randomizer's global scale also scales, and so validates, the ranges of disabled axes: a
    physics-only condition at scale 50 was refused because the disabled appearance range went negative.
    Applying the scale here draws the same values for the enabled axes (a draw is lo + u*(hi-lo)).
    """
    from realgap.randomization.config import effective, validate
    from realgap.randomization.randomizer import AXIS_PARAMS

    cfg = validate({**rand, "scale": 1.0}, AXIS_PARAMS)  # the unscaled config must be valid as given
    for name, axis in cfg["axes"].items():
        if axis["enabled"]:
            cfg["axes"][name] = effective(axis, AXIS_PARAMS[name], scale)
    try:
        return validate(cfg, AXIS_PARAMS)  # the scaled ranges must still be valid (no negative factors)
    except RealgapError as e:
        raise RealgapError(f"{field}: {scale:g} makes {e}") from None


def check_env_id(env_id: str) -> None:
    """The id must name a registered Gymnasium env (``module:Id`` imports ``module`` first, as gym.make does)."""
    import gymnasium as gym

    import realgap.envs  # noqa: F401  (registers the realgap/ ids)

    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except Exception as e:  # ImportError, gymnasium's NameNotFound / VersionNotFound / Error
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RealgapError(f"suite.env.id: no Gymnasium env '{env_id}' ({type(e).__name__}: {first})") from e


def _int(field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RealgapError(f"{field}: expected an integer >= {low}, got {value!r}")
    return value


def build_plan(suite: dict, selection: list[str] | None) -> Plan:
    """Validate the ``suite`` config group (a plain dict) and the condition ``selection``."""
    for key in ("name", "policy", "env", "seeds", "conditions"):
        if key not in suite:
            raise RealgapError(f"suite.{key}: missing")
    conds = suite["conditions"]
    if not isinstance(conds, dict) or not conds:
        raise RealgapError("suite.conditions: expected a non-empty mapping of named conditions")
    names = list(conds)
    if selection is not None:
        if isinstance(selection, str):
            selection = [selection]
        for name in selection:
            if name not in conds:
                raise RealgapError(f"conditions: unknown condition '{name}' (suite '{suite['name']}' has: {', '.join(names)})")
        if len(set(selection)) != len(selection):
            raise RealgapError(f"conditions: duplicate names in {list(selection)}")
        names = [n for n in names if n in selection]
    seeds_cfg = suite["seeds"]
    if not isinstance(seeds_cfg, dict):
        raise RealgapError(f"suite.seeds: expected {{start, n}}, got {seeds_cfg!r}")
    start = _int("suite.seeds.start", seeds_cfg.get("start"), 0)
    n = _int("suite.seeds.n", seeds_cfg.get("n"), 1)
    batch = _int("suite.batch_envs", suite.get("batch_envs", 8), 1)
    frames = suite.get("record_frames", "none")
    if frames not in FRAME_MODES:
        raise RealgapError(f"suite.record_frames: expected one of {', '.join(FRAME_MODES)}, got {frames!r}")
    n_first = _int("suite.frames_first_seeds", suite.get("frames_first_seeds", 0), 0)
    env = suite["env"]
    if not isinstance(env, dict) or not isinstance(env.get("id"), str):
        raise RealgapError("suite.env.id: missing (a Gymnasium id such as realgap/PlaceInReceptacle-v0)")
    check_env_id(env["id"])
    env_kwargs = dict(env.get("kwargs") or {})
    frame_kwargs = {}
    if frames != "none":
        if env["id"].startswith("realgap/"):  # realgap's frames are its image observations
            if "image" not in env_kwargs.get("obs_mode", "state"):
                frame_kwargs["obs_mode"] = "state+image"
        elif "render_mode" not in env_kwargs:  # any other env's frames come from env.render()
            frame_kwargs["render_mode"] = "rgb_array"
    success_key = suite.get("success_key", "is_success")
    if not isinstance(success_key, str) or not success_key:
        raise RealgapError(f"suite.success_key: expected the name of the env's info success key, got {success_key!r}")
    action_bounds = suite.get("action_bounds", "fault")
    if action_bounds not in ACTION_BOUNDS:
        raise RealgapError(f"suite.action_bounds: expected one of {', '.join(ACTION_BOUNDS)}, got {action_bounds!r}")
    baseline = suite.get("baseline", "nominal")
    seeds = tuple(range(start, start + n))
    return Plan(
        name=str(suite["name"]),
        conditions=tuple(_condition(name, conds[name]) for name in names),
        seeds=seeds, batch_envs=batch, env_id=env["id"], env_kwargs=env_kwargs, frames=frames,
        frame_seeds=frozenset(seeds[:n_first]), record_chunks=bool(suite.get("record_chunks", False)),
        baseline=baseline, policy=policy_fingerprint(suite["policy"]),
        success_key=success_key, action_bounds=action_bounds, frame_kwargs=frame_kwargs,
    )
