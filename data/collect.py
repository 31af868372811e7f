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


def env_kwargs(data_cfg: DictConfig) -> dict:
    """``realgap.envs.make`` kwargs of the ``data`` config group (the env's own; DR comes separately)."""
    kwargs = dict(obs_mode=data_cfg.obs_mode, image_size=int(data_cfg.image_size), cameras=list(data_cfg.cameras))
    if data_cfg.get("max_episode_steps"):
        kwargs["max_episode_steps"] = int(data_cfg.max_episode_steps)
    if data_cfg.get("env_kwargs"):  # e.g. a task_variant pinning the target receptacle to one place
        kwargs.update(OmegaConf.to_container(data_cfg.env_kwargs, resolve=True))
    return kwargs


def make_env(data_cfg: DictConfig, randomization: Any = None):
    import realgap.envs as envs

    return envs.make(data_cfg.env_id, randomization=randomization, **env_kwargs(data_cfg))


def run_episode(env, expert, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One expert episode through the shared rollout loop. Rows o_0..o_{T-1} and a_0..a_{T-1}: the
    final observation, which no action follows, is not a training sample."""
    from realgap.evaluation.rollout import GroupTask, run_batch

    task = GroupTask(group=0, condition="collect", seeds=(int(seed),), env_id="", env_kwargs={}, frames="all")
    episode = run_batch([env], expert, task)[0]
    info, length = episode.info, episode.info["length"]
    steps = {k: v[:length] for k, v in episode.steps.items() if k != "reward"}
    episode_info = {
        "seed": seed, "instruction": info.get("instruction", ""), "task": info["task"],
        "dr_params": info["dr_params"], "success": info["success"],
        "termination_reason": info["termination_reason"], "length": length,
    }
    if info["error"]:  # a fault (the expert raised, the sim failed): a failed attempt, with its reason
        episode_info["error"] = info["error"]
    return steps, episode_info


def main(cfg: DictConfig, resume: bool = False, overwrite: bool = False) -> int:
    validate(cfg)
    d = cfg.data
    randomization = OmegaConf.to_container(cfg.randomization, resolve=True) if cfg.get("randomization") else None
    env = make_env(d, randomization)  # validates env + DR config before touching the output
    from realgap.envs.expert import ScriptedExpert

    expert = ScriptedExpert(env)
    buf = ReplayBuffer.open_output(d.path, resume=resume, overwrite=overwrite, field="data.path")
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
