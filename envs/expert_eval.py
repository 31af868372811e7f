"""``realgap expert``: roll the scripted expert out over seeded episodes and report its success.

Nothing is written to disk, so ``--resume`` / ``--overwrite`` have nothing to act on.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap.errors import RealgapError
from realgap.evaluation.stats import wilson


def make_env_from_cfg(cfg: DictConfig):
    """The env named by ``cfg.env`` with ``cfg.randomization`` (None when the group is absent)."""
    import realgap.envs as envs

    kwargs = OmegaConf.to_container(cfg.env.get("kwargs") or {}, resolve=True)
    randomization = OmegaConf.to_container(cfg.randomization, resolve=True) if cfg.get("randomization") else None
    return envs.make(cfg.env.id, randomization=randomization, **kwargs)


def run_episode(env, expert, seed: int) -> dict:
    """One expert episode through the shared rollout loop (``realgap.evaluation.rollout``)."""
    from realgap.evaluation.rollout import GroupTask, run_batch

    info = run_batch([env], expert, GroupTask(0, "expert", (int(seed),), env_id="", env_kwargs={}))[0].info
    reason = info["termination_reason"] + (f" ({info['error']})" if info["error"] else "")
    return {"seed": seed, "success": info["success"], "reason": reason, "steps": info["length"]}


def main(cfg: DictConfig, resume: bool = False, overwrite: bool = False) -> int:
    n, seed_start = int(cfg.n_episodes), int(cfg.seed_start)
    if n < 1:
        raise RealgapError(f"n_episodes: must be >= 1, got {n}")
    if seed_start < 0:
        raise RealgapError(f"seed_start: must be >= 0, got {seed_start}")
    env = make_env_from_cfg(cfg)  # validates env kwargs and the DR config before any rollout
    from realgap.envs.expert import ScriptedExpert

    expert = ScriptedExpert()
    results, k = [], 0
    try:
        with tqdm(range(seed_start, seed_start + n), desc="expert", unit="ep") as bar:
            for seed in bar:
                results.append(run_episode(env, expert, seed))
                k += results[-1]["success"]
                bar.set_postfix(success=f"{k}/{len(results)}")
    finally:
        env.close()
    ci = wilson(k, n)
    dr = cfg.randomization.get("name", "?") if cfg.get("randomization") else "none"
    print(f"expert: {cfg.env.id} randomization={dr} seeds {seed_start}..{seed_start + n - 1}: "
          f"success {k}/{n} = {ci.estimate:.3f} (95% Wilson CI {ci.low:.3f}-{ci.high:.3f}), "
          f"mean steps {sum(r['steps'] for r in results) / n:.1f}")
    failures = [r for r in results if not r["success"]]
    for r in failures[:10]:
        print(f"  failed seed {r['seed']}: {r['reason']} after {r['steps']} steps")
    return 0
