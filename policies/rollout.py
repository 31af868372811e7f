"""A minimal lockstep rollout loop for training-time success checks (the evaluation package owns suites)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm


def rollout_success(make_env: Callable[[], object], policy, seeds: Sequence[int], batch: int = 10,
                    progress: bool = False) -> list[bool]:
    """Run one episode per seed with ``policy`` (protocol: reset/act), ``batch`` envs in lockstep."""
    results: list[bool] = []
    envs = [make_env() for _ in range(min(batch, len(seeds)))]
    bar = tqdm(total=len(seeds), desc="rollout", unit="ep", disable=not progress, leave=False)
    try:
        for lo in range(0, len(seeds), len(envs)):
            group = [int(s) for s in seeds[lo: lo + len(envs)]]
            policy.reset(group)
            obs = [envs[i].reset(seed=s)[0] for i, s in enumerate(group)]
            done = [False] * len(group)
            success = [False] * len(group)
            while not all(done):
                slots = [i for i, d in enumerate(done) if not d]
                actions = policy.act([obs[i] for i in slots], slots)
                for i, a in zip(slots, actions):
                    obs[i], _, terminated, truncated, info = envs[i].step(np.asarray(a, np.float32))
                    if terminated or truncated:
                        done[i] = True
                        success[i] = bool(info.get("is_success", False))
                        bar.update(1)
            results.extend(success)
    finally:
        bar.close()
        for e in envs:
            e.close()
    return results
