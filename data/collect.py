"""``realgap collect``: scripted-expert demonstrations into a zarr ReplayBuffer.

Episode ``i`` of a run uses seed ``data.seed_start + i`` (one seed per attempt, kept or not). Each
kept episode stores per-step ``proprio``, ``object_state``, ``image_<cam>`` (image modes) and the
expert's ``action``, plus JSON info: seed, instruction, task, DR params, success, termination reason.
By default only successful episodes are kept; the store's ``collect`` attribute counts discarded ones
and remembers the next seed, so ``--resume`` continues where a killed run stopped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError

OBS_MODES = ("state", "image", "state+image")


def validate(cfg: DictConfig) -> None:
    d = cfg.data
    for field in ("path", "env_id", "obs_mode", "n_episodes", "max_attempts", "seed_start"):
        if d.get(field) is None:
            raise RealgapError(f"data.{field}: required")
    if d.obs_mode not in OBS_MODES:
        raise RealgapError(f"data.obs_mode: {d.obs_mode!r} is not one of {OBS_MODES}")
    if int(d.n_episodes) < 1:
        raise RealgapError(f"data.n_episodes: must be >= 1, got {d.n_episodes}")
    if int(d.max_attempts) < int(d.n_episodes):
        raise RealgapError(f"data.max_attempts: {d.max_attempts} < data.n_episodes {d.n_episodes}")
    if int(d.seed_start) < 0:
        raise RealgapError(f"data.seed_start: must be >= 0, got {d.seed_start}")


def make_env(data_cfg: DictConfig, randomization: Any = None):
    import realgap.envs as envs

    kwargs = dict(obs_mode=data_cfg.obs_mode, image_size=int(data_cfg.image_size), cameras=list(data_cfg.cameras),
                  randomization=randomization)
    if data_cfg.get("max_episode_steps"):
        kwargs["max_episode_steps"] = int(data_cfg.max_episode_steps)
    return envs.make(data_cfg.env_id, **kwargs)


def step_keys(obs: dict) -> list[str]:
    """Per-step array keys of an observation (everything except the text instruction)."""
    return sorted(k for k, v in obs.items() if isinstance(v, np.ndarray))


def run_episode(env, expert, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    obs, info = env.reset(seed=seed)
    expert.reset([seed])
    keys = step_keys(obs)
    steps: dict[str, list] = {k: [] for k in [*keys, "action"]}
    while True:
        action = np.asarray(expert.act([obs], [0])[0], np.float32)
        for k in keys:
            steps[k].append(obs[k])
        steps["action"].append(action)
        obs, _, terminated, truncated, step_info = env.step(action)
        if terminated or truncated:
            break
    episode_info = {
        "seed": seed, "instruction": str(obs.get("instruction", "")), "task": info.get("task"),
        "dr_params": info.get("dr_params"), "success": bool(step_info.get("is_success", False)),
        "termination_reason": step_info.get("termination_reason"), "length": len(steps["action"]),
    }
    return {k: np.stack(v) for k, v in steps.items()}, episode_info


def main(cfg: DictConfig, resume: bool = False, overwrite: bool = False) -> int:
    validate(cfg)
    d = cfg.data
    randomization = OmegaConf.to_container(cfg.randomization, resolve=True) if cfg.get("randomization") else None
    env = make_env(d, randomization)  # validates env + DR config before touching the output
    from realgap.envs.expert import ScriptedExpert

    expert = ScriptedExpert(env)
    buf = ReplayBuffer.open_output(d.path, resume=resume, overwrite=overwrite)
    state = dict(buf.root.attrs.get("collect", {"next_seed": int(d.seed_start), "n_discarded": 0}))
    stored = [int(i["seed"]) for i in buf.episode_infos()]
    # a kill between the append and the attribute update leaves next_seed stale: trust the episodes
    next_seed = max([int(state["next_seed"]), *[s + 1 for s in stored]])
    attempts = next_seed - int(d.seed_start)
    target = int(d.n_episodes)
    bar = tqdm(total=target, initial=min(buf.n_episodes, target), desc="collect", unit="ep")
    try:
        while buf.n_episodes < target and attempts < int(d.max_attempts):
            steps, info = run_episode(env, expert, next_seed)
            if info["success"] or bool(d.keep_failed):
                buf.append_episode(steps, info)
                bar.update(1)
            else:
                state["n_discarded"] = int(state["n_discarded"]) + 1
            next_seed += 1
            attempts += 1
            state["next_seed"] = next_seed
            buf.root.attrs["collect"] = state
            bar.set_postfix(discarded=state["n_discarded"], seed=next_seed - 1)
    finally:
        bar.close()
        env.close()
    print(f"collect: {buf.n_episodes} episodes in {buf.path} ({state['n_discarded']} failed expert episodes discarded)")
    if buf.n_episodes < target:
        print(f"collect: warning: only {buf.n_episodes}/{target} episodes after {attempts} attempts (data.max_attempts)")
    return 0
