"""Executors run the suite's groups and yield ``(group, episodes)`` as each group finishes.

- ``inline``: in this process (debugging).
- ``local`` (default): a spawn pool, one worker per core, each with ``torch.set_num_threads(1)``.
- ``ray``: one Ray actor per worker (``pip install realgap[ray]``); a local instance is started
  with ``num_cpus=workers`` unless one is already initialised (or ``ray_address`` is given).

Each worker loads the policy once and then runs whole groups, so results do not depend on the executor.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Iterable, Iterator

from realgap.errors import RealgapError

from .policy_loader import load_policy
from .rollout import Episode, GroupTask, run_group

EXECUTORS = ("local", "inline", "ray")
_WORKER: dict = {}  # per-process state of a worker: its policy


def make_env(env_id: str, kwargs: dict):
    import gymnasium as gym

    if env_id.startswith("realgap/"):
        import realgap.envs  # noqa: F401  (registers the ids)
    return gym.make(env_id, **kwargs)


def _single_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def init_worker(policy_spec: str, policy_kwargs: dict) -> None:
    _single_thread()
    _WORKER["policy"] = load_policy(policy_spec, policy_kwargs)


def work(task: GroupTask) -> tuple[int, list[Episode]]:
    return task.group, run_group(task, _WORKER["policy"], make_env)


def _inline(tasks, policy_spec, policy_kwargs, workers, ray_address) -> Iterator:
    policy = load_policy(policy_spec, policy_kwargs)
    for task in tasks:
        yield task.group, run_group(task, policy, make_env)


def _local(tasks, policy_spec, policy_kwargs, workers, ray_address) -> Iterator:
    # A worker whose initializer fails breaks the pool (BrokenProcessPool) instead of respawning forever.
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                               initargs=(policy_spec, policy_kwargs))
    futures = [pool.submit(work, task) for task in tasks]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    def __init__(self, policy_spec: str, policy_kwargs: dict):
        init_worker(policy_spec, policy_kwargs)

    def run(self, task: GroupTask):
        return work(task)


def _ray(tasks, policy_spec, policy_kwargs, workers, ray_address) -> Iterator:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as e:
        raise RealgapError("executor=ray: ray is not installed (pip install 'realgap[ray]')") from e
    started = False
    if not ray.is_initialized():
        # Workers must import what this process imports (e.g. a module:factory policy next to the caller).
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        runtime_env = {"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}
        if ray_address:
            ray.init(address=ray_address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        actors = [actor_cls.remote(policy_spec, policy_kwargs) for _ in range(workers)]
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda actor, task: actor.run.remote(task), list(tasks))
        for actor in actors:
            ray.kill(actor)
    finally:
        if started:
            ray.shutdown()


def execute(
    executor: str, tasks: Iterable[GroupTask], policy_spec: str, policy_kwargs: dict, workers: int,
    ray_address: str | None = None,
) -> Iterator[tuple[int, list[Episode]]]:
    runner = {"inline": _inline, "local": _local, "ray": _ray}[executor]
    return runner(list(tasks), policy_spec, policy_kwargs, workers, ray_address)
