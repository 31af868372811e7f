"""Executors run the suite's groups and yield ``(group, episodes)`` as each group finishes.

- ``inline``: in this process (debugging).
- ``local`` (default): a pool of worker processes, one per core, kept for the life of this process
  (``worker_pool``): every later suite with the same worker count reuses it, so a study or a benchmark
  that runs many suites pays the workers' start-up once.
- ``ray``: one Ray actor per worker (``pip install realgap[ray]``); a local instance is started
  with ``num_cpus=workers`` unless one is already initialised (or ``ray_address`` is given).

Every executor runs a group the same way: ``pinned_threads()`` (one torch/BLAS thread, so float
results never depend on the thread count), the policy loaded once per process (``cached_policy``),
then ``rollout.run_group``. So an episode's outcome is the same inline, in a pool of any size, in a
fresh pool or a reused one, or on Ray.

How local workers start (``start_method``): a worker forked from this process starts in milliseconds
(torch, MuJoCo and realgap are already imported), a spawned one re-imports everything (2-4 CPU-s each,
as long as a short suite's rollouts). Fork is used on Linux while it is safe: no other Python thread
(zarr's I/O loop, a progress-bar monitor) and no GL driver loaded (a process that has rendered keeps
a GL context and llvmpipe threads a forked child cannot use: its first render hangs; measured). The
suite therefore creates the pool before its preflight renders or its store starts zarr's threads.
Where fork is unsafe, a ``forkserver`` (started once, preloading the heavy modules) forks the workers;
where there is none, ``spawn``.

Pool workers die with their parent: on Linux the kernel sends them SIGKILL when the process that
started them dies (``PR_SET_PDEATHSIG``); the forkserver's workers (whose parent is the forkserver,
which itself exits with this process) and workers elsewhere also watch this process's sentinel. A
``kill -9`` of the suite therefore leaves no orphaned workers (nor the resource tracker, which exits
once the last process holding its pipe is gone). At exit, and whenever a suite stops early or the
pool breaks (a worker died), the pool is shut down; the next suite starts a fresh one.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from realgap.errors import RealgapError

from .policy_loader import load_policy
from .rollout import Episode, GroupTask, run_group

EXECUTORS = ("local", "inline", "ray")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# What a forkserver imports once, so that each worker it forks starts with them loaded.
FORKSERVER_PRELOAD = ["torch", "realgap.envs", "realgap.evaluation.suite", "realgap.policies"]
# Shared libraries that are only loaded once this process has created a GL context (Mesa's DRI /
# gallium drivers, NVIDIA's EGL/GL core, OSMesa, GLX): after that, forking is unsafe.
GL_DRIVERS = ("/dri/", "libgallium", "libnvidia-eglcore", "libnvidia-glcore", "libOSMesa", "libGLX_")
POLICY_CACHE_SIZE = 2  # loaded policies a process keeps (an ablation alternates few checkpoints)


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


# ---------------------------------------------------------------------------------------- policies
_POLICIES: OrderedDict = OrderedDict()  # policy key -> loaded policy, most recently used last


def policy_key(fingerprint: dict) -> str:
    """The cache key of a suite's policy (``plan.policy``: spec, kwargs, sha256 of each checkpoint file).

    A checkpoint is identified by its files' content, so a checkpoint retrained into the same folder is
    a different key and is loaded afresh. The expert is code. A ``module:factory`` policy may read
    anything when it is built, so its key is unique to this call: it is loaded once per suite."""
    from .plan import digest

    spec = fingerprint.get("spec")
    if spec == "expert" or "files" in fingerprint:
        return digest(fingerprint)
    return f"{digest(fingerprint)}-{uuid.uuid4().hex}"


def cached_policy(key: str | None, spec: str, kwargs: dict):
    """The policy for ``key``, loaded once per process (``key=None``: load it afresh).

    Reusing a loaded policy is as safe as running several groups with it, which every worker does:
    the protocol's ``reset(seeds)`` starts each batch, and a policy's randomness comes from the seeds."""
    if key is None:
        return load_policy(spec, kwargs)
    policy = _POLICIES.get(key)
    if policy is None:
        policy = load_policy(spec, kwargs)
        _POLICIES[key] = policy
        while len(_POLICIES) > POLICY_CACHE_SIZE:
            _POLICIES.popitem(last=False)
    _POLICIES.move_to_end(key)
    return policy


# ----------------------------------------------------------------------------------------- workers
def die_with_parent(parent_pid: int | None, method: str = "fork") -> None:
    """Make this worker exit when the process that made the pool dies (a kill -9 of the suite included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0 and method != "forkserver":
            if os.getppid() != parent_pid:  # the parent died before the signal was armed
                os._exit(1)
            return
    # The forkserver's workers (their parent is the forkserver) and workers elsewhere: watch the pool
    # owner's sentinel, which is readable once it is gone (the forkserver also exits then).
    parent = mp.parent_process()
    if parent is None:
        return
    if not parent.is_alive():
        os._exit(1)

    def watch():
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="realgap-parent-watch", daemon=True).start()


def init_worker(parent_pid: int | None = None, method: str = "spawn") -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid, method)
    _single_thread()


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


def work(task: GroupTask, policy: tuple[str | None, str, dict]) -> tuple[int, list[Episode]]:
    episodes = run_group(task, cached_policy(*policy))
    release_freed_memory()  # the group's envs are closed
    return task.group, episodes


def _preload(policy: tuple[str | None, str, dict]) -> int:
    """Load the policy into this worker's cache (while the suite's main process runs its preflight)."""
    cached_policy(*policy)
    return os.getpid()


# -------------------------------------------------------------------------------------------- pool
def _fork_is_safe() -> bool:
    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return False
    if threading.active_count() > 1:
        return False
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return not any(lib in maps for lib in GL_DRIVERS)


def start_method() -> str:
    """How new workers start now: ``fork`` where safe (see the module docstring), else ``forkserver``,
    else ``spawn``. ``REALGAP_START_METHOD`` overrides it (tests, debugging); fork is never forced
    where it is unsafe."""
    forced = os.environ.get("REALGAP_START_METHOD")
    if forced:
        if forced not in ("fork", "forkserver", "spawn") or forced not in mp.get_all_start_methods():
            raise RealgapError(f"REALGAP_START_METHOD: expected one of {', '.join(mp.get_all_start_methods())}, "
                               f"got {forced!r}")
        if forced != "fork" or _fork_is_safe():
            return forced
    if _fork_is_safe():
        return "fork"
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _process_context() -> tuple:
    """What a worker takes from this process when it starts: a pool is reused only while it is unchanged."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return os.getcwd(), tuple(sys.path), tuple(sorted(env.items()))


class WorkerPool:
    """``workers`` local worker processes, reused by every suite of this process (``worker_pool``)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.method = start_method()
        self.context = _process_context()
        ctx = mp.get_context(self.method)
        if self.method == "forkserver":
            ctx.set_forkserver_preload(FORKSERVER_PRELOAD)  # used when the forkserver starts (once)
        # A worker whose initializer fails breaks the pool (BrokenProcessPool) instead of respawning forever.
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                            initargs=(os.getpid(), self.method))
        self.suites = 0  # suites run on this pool (1 = this is its first)

    @property
    def broken(self) -> bool:
        return bool(getattr(self.executor, "_broken", False)) or getattr(self.executor, "_shutdown_thread", False)

    def pids(self) -> list[int]:
        return sorted(getattr(self.executor, "_processes", None) or {})

    def start(self, policy: tuple[str | None, str, dict]) -> None:
        """Start the workers now and have them load ``policy`` (a forked pool starts all its workers at
        its first submit, so this is what forks them: call it before this process renders)."""
        for _ in range(self.workers):
            self.executor.submit(_preload, policy)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


_POOL: WorkerPool | None = None


def worker_pool(workers: int) -> WorkerPool:
    """This process's pool of ``workers`` workers: the current one if it has that many, is not broken and
    this process's working directory, ``sys.path`` and environment are unchanged; else a fresh one."""
    global _POOL
    if _POOL is not None and (_POOL.workers != workers or _POOL.broken or _POOL.context != _process_context()):
        shutdown_pool()
    if _POOL is None:
        _POOL = WorkerPool(workers)
    return _POOL


def shutdown_pool() -> None:
    """Stop this process's pool (its workers finish their current group first); the next suite starts one."""
    global _POOL
    pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown_pool)


def prepare(executor: str, workers: int, policy: tuple[str | None, str, dict]) -> None:
    """Before a suite's preflight: make sure the local pool's workers run (forked before this process
    renders) and load the policy meanwhile. Nothing to do for the other executors."""
    if executor == "local":
        worker_pool(workers).start(policy)


def _inline(tasks, policy, workers, ray_address) -> Iterator:
    with pinned_threads():  # the same settings as a pool worker, or outcomes could differ
        loaded = cached_policy(*policy)
        for task in tasks:
            yield task.group, run_group(task, loaded)
            release_freed_memory()  # the caller has stored the group


def _local(tasks, policy, workers, ray_address) -> Iterator:
    pool = worker_pool(workers)
    pool.suites += 1
    futures = {pool.executor.submit(work, task, policy) for task in tasks}
    finished = False
    try:
        for future in as_completed(futures):
            # Drop our reference: a finished group's episodes are freed once the caller has stored them
            # (a list of every future kept every result alive, ~20 KB per episode, MBs with frames).
            futures.discard(future)
            yield future.result()
            release_freed_memory()  # the caller has stored the group
        finished = True
    finally:
        if not finished:  # an error here or in the caller, Ctrl-C, a dead worker: stop this suite's groups
            for future in futures:
                future.cancel()
            if _POOL is pool:
                shutdown_pool()  # running groups cannot be cancelled: the next suite gets a fresh pool


class _RayWorker:
    def __init__(self):
        init_worker()

    def run(self, task: GroupTask, policy):
        return work(task, policy)


def _ray(tasks, policy, workers, ray_address) -> Iterator:
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
        actors = [actor_cls.remote() for _ in range(workers)]
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda actor, task: actor.run.remote(task, policy), list(tasks))
        for actor in actors:
            ray.kill(actor)
    finally:
        if started:
            ray.shutdown()


def execute(
    executor: str, tasks: Iterable[GroupTask], policy_spec: str, policy_kwargs: dict, workers: int,
    ray_address: str | None = None, policy_key: str | None = None,
) -> Iterator[tuple[int, list[Episode]]]:
    """Run ``tasks``; ``policy_key`` (``policy_key(plan.policy)``) lets a process reuse the policy it
    loaded for an earlier suite (None: each process loads it once for this call)."""
    runner = {"inline": _inline, "local": _local, "ray": _ray}[executor]
    key = policy_key if policy_key is not None else f"call-{uuid.uuid4().hex}"
    return runner(list(tasks), (key, policy_spec, dict(policy_kwargs)), workers, ray_address)
