"""Suite throughput, harness overhead, worker scaling and memory. Prints figures; asserts nothing.

    python benchmarks/bench_suite.py [--seeds 16] [--long-seeds 40] [--out /tmp/bench_suite] [--parts 1234]
    python benchmarks/bench_suite.py --parts 3 --workers 1,2 --rounds 2     # goal 2 (2 vs 1 workers)

1. episodes/min of the default suite (all conditions, --seeds seeds, local pool, one worker per core);
2. harness overhead: the same episodes' env stepping + rendering alone (stored actions replayed, fresh
   envs as the harness makes them) plus the policy's batched act() alone on the recorded observations,
   vs the inline suite on those episodes (target >= 90%);
3. worker scaling: the default suite (all 9 conditions x --seeds = 144 episodes) with 1 and 2 workers
   (``--workers 1,2,4,8,16`` for the curve on a bigger machine), interleaved ``--rounds`` times; goal
   2 vs 1 >= 1.8x. Also prints start-up (time to the first stored group) and the worker processes
   seen per suite (one pool per suite, each worker reused across conditions);
4. main-process RSS sampled over a long inline suite (should stay flat; ``bench_memory.py`` measures the
   main process and the workers over thousands of episodes).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from realgap.cli import compose  # noqa: E402
from realgap.envs import make as make_env  # noqa: E402
from realgap.evaluation.executors import _single_thread  # noqa: E402
from realgap.evaluation.plan import build_plan  # noqa: E402
from realgap.evaluation.policy_loader import load_policy  # noqa: E402
from realgap.evaluation import store as store_mod  # noqa: E402
from realgap.evaluation.store import open_store  # noqa: E402
from realgap.evaluation.suite import run_suite  # noqa: E402


def suite(out: Path, *overrides: str) -> tuple[float, int]:
    cfg = compose("suite", [f"out={out}", "report.enabled=false", *overrides])
    t0 = time.perf_counter()
    run_suite(cfg, overwrite=True, progress=False)
    return time.perf_counter() - t0, open_store(out / "episodes.zarr").n_episodes


def isolated_limit(out: Path, overrides: list[str]) -> tuple[float, float]:
    """Env time (make + reset + replay stored actions, rendering as configured) and policy time
    (batched act() on the recorded observations, same groups) for the episodes stored in ``out``."""
    cfg = compose("suite", [f"out={out}", *overrides])
    plan = build_plan(OmegaConf.to_container(cfg.suite, resolve=True), cfg.conditions and list(cfg.conditions))
    store = open_store(out / "episodes.zarr")
    index = {(i["condition"], i["seed"]): n for n, i in enumerate(store.episode_infos())}
    policy = load_policy(cfg.suite.policy.spec, dict(cfg.suite.policy.kwargs or {}))
    env_s = pol_s = 0.0
    for task in tqdm(plan.groups(), desc="isolated replay", leave=False):
        t0 = time.perf_counter()
        envs = [make_env(task.env_id, **task.env_kwargs) for _ in task.seeds]
        actions = [store.episode(index[(task.condition, s)], keys=["action"])["action"][:-1] for s in task.seeds]
        observations = []
        for env, seed, acts in zip(envs, task.seeds, actions):
            obs, _ = env.reset(seed=int(seed))
            seen = [obs]
            for a in acts:
                obs, *_ = env.step(a)
                seen.append(obs)
            observations.append(seen)
            env.close()
        env_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        policy.reset(list(task.seeds))
        for t in range(max(len(a) for a in actions)):
            active = [i for i, a in enumerate(actions) if t < len(a)]
            policy.act([observations[i][t] for i in active], active)
        pol_s += time.perf_counter() - t0
    return env_s, pol_s


class Timeline:
    """When each group was stored, and which worker processes existed, during one suite run."""

    def __init__(self):
        self.stored: list[float] = []
        self.pids: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            self.pids.update(p.pid for p in mp.active_children())

    def __enter__(self):
        self._append = store_mod.EpisodeWriter.append
        timeline = self

        def append(writer, episodes):
            out = timeline._append(writer, episodes)
            timeline.stored.append(time.perf_counter())
            return out

        store_mod.EpisodeWriter.append = append
        self._thread.start()
        return self

    def __exit__(self, *exc):
        store_mod.EpisodeWriter.append = self._append
        self._done.set()
        self._thread.join()


def scaling(root: Path, seeds: int, workers: list[int], rounds: int) -> None:
    """The default suite (all conditions, ``seeds`` seeds) with each worker count, ``rounds`` times
    interleaved; prints wall time, time to the first stored group (start-up: preflight, pool, first
    group), the worker processes seen (one pool per suite: each worker starts once and runs groups of
    every condition) and the speed-up over the first worker count."""
    times: dict[int, list[float]] = {w: [] for w in workers}
    for r in range(rounds):
        for w in workers:
            cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            with Timeline() as timeline:
                t0 = time.perf_counter()
                secs, n = suite(root / f"w{w}", f"suite.seeds.n={seeds}", f"workers={w}")
            cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            main_cpu, workers_cpu = ((b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime) for a, b in zip(cpu0, cpu1))
            times[w].append(secs)
            first = timeline.stored[0] - t0 if timeline.stored else float("nan")
            print(f"[3] round {r + 1}: {n} episodes, {w} worker(s): {secs:.1f} s = {60 * n / secs:.1f} episodes/min; "
                  f"first group stored after {first:.1f} s; {len(timeline.stored)} groups; worker processes seen: "
                  f"{len(timeline.pids)}; CPU s: main {main_cpu:.1f}, workers {workers_cpu:.1f} "
                  f"(= {(main_cpu + workers_cpu) / secs:.2f} cores busy on average); {load_average()}")
    base = workers[0]
    for w in workers[1:]:
        ratio = sum(times[base]) / sum(times[w])
        print(f"[3] speed-up, {w} workers vs {base}: {ratio:.2f}x over {rounds} round(s) "
              f"({sum(times[base]):.1f} s vs {sum(times[w]):.1f} s; goal >= 1.8x for 2 vs 1 on 144 episodes)")


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--long-seeds", type=int, default=40)
    ap.add_argument("--out", default="/tmp/bench_suite")
    ap.add_argument("--parts", default="1234", help="which figures to measure, e.g. 234")
    ap.add_argument("--workers", default="1,2", help="worker counts for part 3 (first = the baseline)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of part 3")
    args = ap.parse_args()
    root = Path(args.out)
    cores = len(os.sched_getaffinity(0))
    print(f"bench_suite: {load_average()}; {cores} usable cores")

    if "1" in args.parts:
        secs, n = suite(root / "default", f"suite.seeds.n={args.seeds}")
        print(f"[1] default suite, {n} episodes, local x{cores}: {secs:.1f} s = {60 * n / secs:.1f} episodes/min")

    _single_thread()
    sub = [f"suite.seeds.n={args.seeds}", "conditions=[nominal,target_lab,lighting]", "executor=inline"]
    if "2" in args.parts:
        secs, n = suite(root / "inline", *sub)
        env_s, pol_s = isolated_limit(root / "inline", sub)
        print(f"[2] harness overhead, {n} episodes inline: suite {secs:.1f} s; env+render alone {env_s:.1f} s, "
              f"policy alone {pol_s:.1f} s -> limit/suite = {100 * (env_s + pol_s) / secs:.1f}% (target >= 90%)")

    if "3" in args.parts:
        scaling(root, args.seeds, [int(w) for w in args.workers.split(",")], args.rounds)
    if "4" not in args.parts:
        return

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        start = time.perf_counter()
        while not done.wait(1.0):
            samples.append((time.perf_counter() - start, rss_mb()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    secs, n = suite(root / "long", f"suite.seeds.n={args.long_seeds}", "executor=inline")
    done.set()
    thread.join()
    rss = np.array([r for _, r in samples])
    q = len(rss) // 4 or 1
    print(f"[4] long inline suite, {n} episodes in {secs:.0f} s: RSS MB first quarter {rss[:q].mean():.0f}, "
          f"last quarter {rss[-q:].mean():.0f}, max {rss.max():.0f}")


if __name__ == "__main__":
    main()
