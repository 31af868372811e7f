"""Executors run the suite's groups and yield ``(group, episodes)`` as each group finishes.

- ``inline``: in this process (debugging).
- ``local`` (default): a spawn pool, one worker per core.
- ``ray``: one Ray actor per worker (``pip install realgap[ray]``); a local instance is started
  with ``num_cpus=workers`` unless one is already initialised (or ``ray_address`` is given).

Every executor runs a group the same way: ``pinned_threads()`` (one torch/BLAS thread, so float
results never depend on the thread count), the policy loaded once, then ``rollout.run_group``. So
an episode's outcome is the same inline, in a pool of any size, or on Ray.

Pool workers die with their parent: on Linux the kernel sends them SIGKILL when the process that
started them dies (``PR_SET_PDEATHSIG``); elsewhere a thread watching the parent's sentinel exits.
A ``kill -9`` of the suite therefore leaves no orphaned workers (nor the resource tracker, which
exits once the last process holding its pipe is gone).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Iterable, Iterator

from realgap.errors import RealgapError

from .policy_loader import load_policy
from .rollout import Episode, GroupTask, run_group

EXECUTORS = ("local", "inline", "ray")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_WORKER: dict = {}  # per-process state of a worker: its policy


def _single_thread() -> None:
    """One thread for torch and the BLAS libraries, for the rest of this (worker) process."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def pinned_threads():
    """``_single_thread()`` for the duration of a block, then the caller's settings again (inline)."""
    import torch

    saved_env = {var: os.environ.get(var) for var in THREAD_VARS}
    saved_threads = torch.get_num_threads()
    _single_thread()
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when ``parent_pid`` dies (a kill -9 of the suite included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before the signal was armed
                os._exit(1)
            return
    parent = mp.parent_process()
    if parent is None:
        return

    def watch():
        mp.connection.wait([parent.sentinel])  # readable once the parent is gone
        os._exit(1)

    threading.Thread(target=watch, name="realgap-parent-watch", daemon=True).start()


def init_worker(policy_spec: str, policy_kwargs: dict, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    _single_thread()
    _WORKER["policy"] = load_policy(policy_spec, policy_kwargs)


def release_freed_memory() -> None:
    """Give the memory freed by the last group back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each group builds and frees its envs' MuJoCo models and the store rewrites a partial zarr chunk
    per append; glibc keeps such freed memory, so RSS crept up by tens of KB per episode over a long
    suite although nothing was kept alive. Takes well under a millisecond per group."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:
            _LIBC = getattr(ctypes.CDLL(None), "malloc_trim", False)
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC(0)


_LIBC = None  # malloc_trim, or False where there is none


def work(task: GroupTask) -> tuple[int, list[Episode]]:
    episodes = run_group(task, _WORKER["policy"])
    release_freed_memory()  # the group's envs are closed
    return task.group, episodes


def _inline(tasks, policy_spec, policy_kwargs, workers, ray_address) -> Iterator:
    with pinned_threads():  # the same settings as a pool worker, or outcomes could differ
        policy = load_policy(policy_spec, policy_kwargs)
        for task in tasks:
            yield task.group, run_group(task, policy)
            release_freed_memory()  # the caller has stored the group


def _local(tasks, policy_spec, policy_kwargs, workers, ray_address) -> Iterator:
    # A worker whose initializer fails breaks the pool (BrokenProcessPool) instead of respawning forever.
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                               initargs=(policy_spec, policy_kwargs, os.getpid()))
    futures = {pool.submit(work, task) for task in tasks}
    try:
        for future in as_completed(futures):
            # Drop our reference: a finished group's episodes are freed once the caller has stored them
            # (a list of every future kept every result alive, ~20 KB per episode, MBs with frames).
            futures.discard(future)
            yield future.result()
            release_freed_memory()  # the caller has stored the group
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
