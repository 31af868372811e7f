"""Training-time success checks: seeded episodes through the shared rollout loop
(``realgap.evaluation.rollout.run_batch``), ``batch`` envs in lockstep, reused across batches."""

from __future__ import annotations

from typing import Callable, Sequence

from tqdm import tqdm


def rollout_success(make_env: Callable[[], object], policy, seeds: Sequence[int], batch: int = 10,
                    progress: bool = False) -> list[bool]:
    """Run one episode per seed with ``policy`` (protocol: reset/act); returns each episode's success.
    Episodes that faulted (the policy raised, or sent NaN / out-of-range actions) would read as failures:
    any fault stops the check with the first one's message instead."""
    from realgap.errors import RealgapError
    from realgap.evaluation.rollout import FAULT_REASONS, GroupTask, run_batch

    results: list[bool] = []
    envs = [make_env() for _ in range(min(batch, len(seeds)))]
    bar = tqdm(total=len(seeds), desc="rollout", unit="ep", disable=not progress, leave=False)
    try:
        for lo in range(0, len(seeds), len(envs)):
            group = tuple(int(s) for s in seeds[lo: lo + len(envs)])
            task = GroupTask(group=lo // len(envs), condition="train", seeds=group, env_id="", env_kwargs={})
            for ep in run_batch(envs, policy, task):
                if ep.info.get("termination_reason") in FAULT_REASONS:
                    raise RealgapError(f"rollout check: seed {ep.info.get('seed')} faulted "
                                       f"({ep.info['termination_reason']}: {ep.info.get('error')})")
                results.append(ep.info["success"])
            bar.update(len(group))
    finally:
        bar.close()
        for e in envs:
            e.close()
    return results
