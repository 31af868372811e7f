"""``realgap suite``: run a rollout suite into an episode store, then write its report.

    realgap suite [suite=default] [conditions=[nominal,lighting]] [workers=2] [executor=ray]
                  [out=outputs/suite/default] [--resume | --overwrite]

Order of work: validate the config and conditions, check the output folder, load the policy and
check its action shape on one real observation (all before any rollout), then run the fixed groups
with a progress bar, appending finished episodes to the store, then build the report.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap.envs import is_image_key
from realgap.errors import RealgapError

from . import store as store_mod
from .executors import (
    EXECUTORS,
    cached_policy,
    execute,
    pinned_threads,
    policy_key,
    prepare,
)
from .plan import Plan, build_plan
from .rollout import FAULT_REASONS, Episode, _Recorder

STORE_EVERY_S = 2.0  # finished episodes wait at most this long to be stored (a kill loses no more)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def preflight(plan: Plan, policy_spec: str, policy_kwargs: dict, key: str | None = None) -> dict[str, tuple[tuple, str]]:
    """Build every condition's env and check the policy's first action; returns the frame specs.

    A policy whose action shape does not fit the env, or an env config the env rejects, is bad
    input: it fails here with one line, before anything is written.
    """
    import realgap.envs as envs

    frame_specs: dict[str, tuple[tuple, str]] = {}
    policy = cached_policy(key, policy_spec, policy_kwargs)  # the inline executor reuses it
    seed = int(plan.seeds[0])
    for i, cond in enumerate(plan.conditions):
        try:
            env = envs.make(plan.env_id, **plan.env_kwargs_for(cond))
        except RealgapError as e:
            raise RealgapError(_field_of_env_error(str(e), plan, cond)) from e
        except Exception as e:
            raise RealgapError(f"suite.conditions.{cond.name}: the env rejects it ({type(e).__name__}: {e})") from e
        try:
            if i == 0:  # one real observation is enough to check the policy's shapes
                obs, _ = env.reset(seed=seed)
                if plan.frames != "none":  # the frames as the env that makes them gives them
                    frame_env = envs.make(plan.env_id, **plan.env_kwargs_for(cond, frames=True))
                    try:
                        # Image observations its space declares need no render here: this process then
                        # never makes a GL context, and can keep forking worker pools (executors.py).
                        spaces = getattr(frame_env.observation_space, "spaces", None) or {}
                        frame_specs = {k: (tuple(s.shape), str(np.dtype(s.dtype))) for k, s in spaces.items()
                                       if is_image_key(k) and getattr(s, "shape", None)}
                        if not frame_specs:  # render() frames (or undeclared images): as the env gives them
                            rows = _Recorder(frame_env, "all").rows(frame_env.reset(seed=seed)[0])
                            frame_specs = {k: (np.shape(v), str(v.dtype)) for k, v in rows.items()
                                           if is_image_key(k)}
                    finally:
                        frame_env.close()
                    if not frame_specs:
                        raise RealgapError(f"suite.record_frames: {plan.env_id} gives no image observations and no "
                                           f"env.render() frames (render_mode='rgb_array'); use record_frames=none")
                _check_first_action(policy, policy_spec, obs, seed, env.action_space.shape, plan.env_id)
        finally:
            env.close()
    return frame_specs


def _field_of_env_error(msg: str, plan: Plan, cond) -> str:
    """Name the suite field behind an env/DR error (``env.id: ...`` -> ``suite.env.id: ...``)."""
    field = msg.split(":", 1)[0].split(".")[0]
    if msg.startswith("env."):
        return f"suite.{msg}"
    if msg.startswith("randomization"):
        return f"suite.conditions.{cond.name}.{msg}"
    if field in (cond.env_kwargs or {}):
        return f"suite.conditions.{cond.name}.env_kwargs.{msg}"
    if field in plan.env_kwargs:
        return f"suite.env.kwargs.{msg}"
    return msg


def _check_success_key(plan: Plan, episodes: list[Episode]) -> bool:
    """True once the env has reported ``info[success_key]``; a group of normally ended episodes
    that never did is a one-line error (a success rate of 0 that means "never measured")."""
    if any(ep.success_reported for ep in episodes):
        return True
    ended = [ep for ep in episodes if ep.info["termination_reason"] not in FAULT_REASONS]
    if not ended:
        return False
    seen = sorted({k for ep in ended for k in ep.info_keys})
    raise RealgapError(f"suite.success_key: {plan.env_id} never reported info['{plan.success_key}'] in "
                       f"{len(ended)} episodes (its info keys: {', '.join(seen) or 'none'}); "
                       f"set suite.success_key to the key it uses")


def _check_metadata(policy, policy_spec: str, obs, shape: tuple) -> None:
    """Checkpoint policies declare their observation keys/shapes and action size: check them first."""
    obs = obs if isinstance(obs, dict) else {"obs": obs}
    model = getattr(policy, "policy", policy)
    keys = [*getattr(model, "state_keys", []), *getattr(model, "image_keys", [])]
    missing = [k for k in keys if k not in obs]
    if missing:
        raise RealgapError(f"{policy_spec}: the policy needs observation keys {missing} that the env does not "
                           f"give (obs_mode / cameras?); it gives {sorted(obs)}")
    shapes = getattr(model, "shapes", {}) or {}
    for k in keys:
        if k in shapes and tuple(np.shape(obs[k])) != tuple(shapes[k]):
            raise RealgapError(f"{policy_spec}: observation '{k}' has shape {tuple(np.shape(obs[k]))}, "
                               f"the policy was trained on {tuple(shapes[k])}")
    dim = getattr(model, "action_dim", None)
    if dim is not None and (int(dim),) != tuple(shape):
        raise RealgapError(f"{policy_spec}: the policy's action_dim is {dim}, the env expects {tuple(shape)}")


def _check_first_action(policy, policy_spec: str, obs: dict, seed: int, shape: tuple, env_id: str) -> None:
    _check_metadata(policy, policy_spec, obs, shape)
    policy.reset([seed])
    try:
        action = np.asarray(policy.act([obs], [0]))
    except Exception as e:
        raise RealgapError(f"suite.policy.spec: act() raised on the first observation ({type(e).__name__}: {e})") from e
    if action.shape != (1, *shape):
        raise RealgapError(
            f"suite.policy.spec: '{policy_spec}' returns actions of shape {action.shape[1:]} per env, "
            f"the env {env_id} expects {tuple(shape)}"
        )


def resolve_workers(workers) -> int:
    if workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RealgapError(f"workers: expected an integer >= 1 (or null for one per core), got {workers!r}")
    return workers


def run_suite(cfg, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) the suite described by the composed ``suite`` config; returns the output folder."""
    cfg = _plain(cfg)
    suite = cfg.get("suite")
    if not isinstance(suite, dict):
        raise RealgapError("suite: missing (pick one with suite=<name>)")
    plan = build_plan(suite, cfg.get("conditions"))
    executor = cfg.get("executor", "local")
    if executor not in EXECUTORS:
        raise RealgapError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    workers = resolve_workers(cfg.get("workers"))
    if not cfg.get("out"):
        raise RealgapError("out: missing (the output folder)")
    out = Path(cfg["out"]).expanduser()
    mode = store_mod.check_output(out, resume, overwrite, plan)  # a changed suite/policy fails here
    policy = suite["policy"] if isinstance(suite["policy"], dict) else {"spec": suite["policy"]}
    key = policy_key(plan.policy)  # a process reuses a policy it loaded before while its files are unchanged
    n_workers = min(workers, len(plan.groups()))
    # The local pool's workers start (forked) before the preflight renders, and load the policy meanwhile.
    prepare(executor, n_workers, (key, policy.get("spec"), policy.get("kwargs") or {}))
    with pinned_threads():  # the policy runs under the same settings everywhere, its first check included
        frame_specs = preflight(plan, policy.get("spec"), policy.get("kwargs") or {}, key)

    store = store_mod.open_output(out, mode, plan, suite)
    writer = store_mod.EpisodeWriter(store, frame_specs)
    done = store_mod.done_episodes(store)
    todo = [t for t in plan.groups() if any((t.condition, s) not in done for s in t.seeds)]
    started = time.perf_counter()
    bar = tqdm(total=plan.n_episodes, initial=len(done), unit="ep", desc=f"suite {plan.name}",
               disable=not progress, dynamic_ncols=True)
    results = execute(executor, todo, policy["spec"], policy.get("kwargs") or {},
                      n_workers if executor == "local" else min(workers, max(1, len(todo))), cfg.get("ray_address"), key)
    reported = False
    # Finished groups are stored together at most STORE_EVERY_S apart: each append costs the main process
    # ~60 ms of CPU (zarr rewrites the last chunk of every array), CPU the workers need when there are as
    # many workers as cores.
    # Once fewer groups are left than workers, a core is idle: each group is stored as it comes.
    pending: list[Episode] = []
    stored, last_store = bool(done), time.perf_counter()
    left = len(todo)
    try:
        for _, episodes in results:
            left -= 1
            try:
                reported = reported or _check_success_key(plan, episodes)
            except RealgapError:
                if mode != "resume" and not stored:  # nothing was written: leave no half-made output
                    shutil.rmtree(out, ignore_errors=True)
                raise
            new = [ep for ep in episodes if (ep.condition, ep.seed) not in done]  # on resume only the missing
            pending += new
            done.update((ep.condition, ep.seed) for ep in new)
            bar.update(len(new))
            if pending and (time.perf_counter() - last_store >= STORE_EVERY_S or left < workers):
                writer.append(pending)
                pending, stored, last_store = [], True, time.perf_counter()
        if pending:
            writer.append(pending)
    finally:
        results.close()  # a generator: stops the workers if we leave early (error, Ctrl-C)
        bar.close()
    elapsed = time.perf_counter() - started
    ran = sum(len(t.seeds) for t in todo)
    if progress and ran:
        where = executor if executor == "inline" else f"{executor} x{workers}"
        print(f"suite {plan.name}: {ran} episodes in {elapsed:.1f} s ({60 * ran / elapsed:.1f} episodes/min, {where})")
    return out


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    options = OmegaConf.to_container(cfg.get("report"), resolve=True) if cfg.get("report") else {}
    enabled = options.pop("enabled", True)
    if enabled:  # bad report options must fail before the first rollout, not after the last
        from .report import check_options

        check_options(options, "report.")
    out = run_suite(cfg, resume=resume, overwrite=overwrite)
    if enabled:
        from .report import build_report

        index = build_report(out, options)
        print(f"report: {index}")
    print(f"episodes: {out / store_mod.STORE_DIR}")
    return 0
