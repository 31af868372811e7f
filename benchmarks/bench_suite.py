"""Suite throughput, harness overhead, worker scaling and memory. Prints figures; asserts nothing.

    python benchmarks/bench_suite.py [--seeds 16] [--long-seeds 40] [--out /tmp/bench_suite] [--parts 1234]
    python benchmarks/bench_suite.py --parts 3 --seeds 16 --workers 1,2 --rounds 2   # goal 2 (2 vs 1 workers)

1. episodes/min of the default suite (all conditions, --seeds seeds, local pool, one worker per core);
2. harness overhead: the same episodes' env stepping + rendering alone (stored actions replayed, fresh
   envs as the harness makes them) plus the policy's batched act() alone on the recorded observations,
   vs the inline suite on those episodes (target >= 90%);
3. worker scaling: the default suite (all 9 conditions x --seeds = 144 episodes) with 1 and 2 workers
   (``--workers 1,2,4,8,16`` for the curve on a bigger machine), interleaved ``--rounds`` times; goal
   2 vs 1 >= 1.8x. Two figures per worker count: **cold**, a fresh pool (the suite run in a fresh
   process, as ``realgap suite`` does; its import time excluded), and **warm**, the pool reused (a second
   suite in this process, as the suites of a study or a benchmark reuse it). Also prints the start
   method, the time to the first stored group, the worker processes, and the CPU seconds of the main
   process and of the workers (how busy the cores were);
4. main-process RSS sampled over a long inline suite (should stay flat; ``bench_memory.py`` measures the
   main process and the workers over thousands of episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from realgap.cli import compose  # noqa: E402
from realgap.envs import make as make_env  # noqa: E402
from realgap.evaluation import executors  # noqa: E402
from realgap.evaluation.executors import _single_thread  # noqa: E402
from realgap.evaluation.plan import build_plan  # noqa: E402
from realgap.evaluation.policy_loader import load_policy  # noqa: E402
from realgap.evaluation import store as store_mod  # noqa: E402
from realgap.evaluation import suite as suite_mod  # noqa: E402
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
    """When each group's episodes reached the main process, and when they were stored, in one suite run."""

    def __init__(self):
        self.arrived: list[float] = []
        self.stored: list[float] = []

    def __enter__(self):
        self._append, self._execute = store_mod.EpisodeWriter.append, suite_mod.execute
        timeline = self

        def append(writer, episodes):
            out = timeline._append(writer, episodes)
            timeline.stored.append(time.perf_counter())
            return out

        def execute(*args, **kwargs):
            for result in timeline._execute(*args, **kwargs):
                timeline.arrived.append(time.perf_counter())
                yield result

        store_mod.EpisodeWriter.append, suite_mod.execute = append, execute
        return self

    def __exit__(self, *exc):
        store_mod.EpisodeWriter.append, suite_mod.execute = self._append, self._execute


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (a reused worker is never reaped, so no rusage)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def timed_suite(out: Path, seeds: int, workers: int, *overrides: str) -> dict:
    """One default suite with ``workers`` workers on this process's pool (fresh or reused), measured."""
    pool = executors._POOL if executors._POOL is not None and executors._POOL.workers == workers else None
    fresh = pool is None
    before = {p: cpu_seconds(p) for p in (pool.pids() if pool else [])}
    main0 = time.process_time()
    with Timeline() as timeline:
        secs, n = suite(out, f"suite.seeds.n={seeds}", f"workers={workers}", *overrides)
        end = time.perf_counter()
    t0 = end - secs  # run_suite's start
    pool = executors._POOL
    pids = pool.pids()
    arrived = timeline.arrived
    return {"secs": secs, "n": n, "first": arrived[0] - t0 if arrived else float("nan"), "groups": len(arrived),
            "stores": len(timeline.stored), "last_alone": arrived[-1] - arrived[-2] if len(arrived) > 1 else 0.0,
            "after_last": end - arrived[-1] if arrived else 0.0, "pids": len(pids), "method": pool.method,
            "fresh": fresh,
            "main_cpu": time.process_time() - main0, "workers_cpu": sum(cpu_seconds(p) - before.get(p, 0.0) for p in pids)}


def cold_suite(out: Path, seeds: int, workers: int, *overrides: str) -> dict:
    """``timed_suite`` in a fresh process (a fresh pool, as ``realgap suite`` starts one). The modules this
    process has loaded are imported first, so import time is excluded as in the warm runs."""
    code = ("import json, sys; sys.argv = ['bench_suite']; import torch, realgap.policies, bench_suite as b; "
            f"print('RESULT', json.dumps(b.timed_suite(b.Path({str(out)!r}), {seeds}, {workers}, *{list(overrides)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                          check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"cold suite failed: {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def scaling(root: Path, seeds: int, workers: list[int], rounds: int, *overrides: str) -> None:
    """The default suite (all conditions, ``seeds`` seeds) with each worker count, ``rounds`` times
    interleaved, cold (a fresh process and pool) and warm (this process's pool, reused after a first
    suite); prints each run and the speed-up over the first worker count."""
    times: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for w in workers:
            runs = [("cold", cold_suite(root / f"w{w}", seeds, w, *overrides))]
            executors.shutdown_pool()
            timed_suite(root / f"w{w}", seeds, w, *overrides)  # starts this process's pool
            runs.append(("warm", timed_suite(root / f"w{w}", seeds, w, *overrides)))
            for kind, m in runs:
                times.setdefault((kind, w), []).append(m["secs"])
                print(f"[3] round {r + 1}, {kind}: {m['n']} episodes, {w} worker(s) ({m['method']}, "
                      f"{'fresh' if m['fresh'] else 'reused'} pool): {m['secs']:.1f} s = "
                      f"{60 * m['n'] / m['secs']:.1f} episodes/min; first group back after {m['first']:.1f} s; "
                      f"{m['groups']} groups in {m['stores']} stores; last group alone ~{m['last_alone']:.2f} s, "
                      f"then {m['after_last']:.2f} s to the end; worker processes: {m['pids']}; "
                      f"CPU s: main {m['main_cpu']:.1f}, "
                      f"workers {m['workers_cpu']:.1f} (= {(m['main_cpu'] + m['workers_cpu']) / m['secs']:.2f} cores "
                      f"busy); {load_average()}", flush=True)
    executors.shutdown_pool()
    base = workers[0]
    for kind in ("cold", "warm"):
        for w in workers[1:]:
            a, b = sum(times[(kind, base)]), sum(times[(kind, w)])
            print(f"[3] speed-up {kind}, {w} workers vs {base}: {a / b:.2f}x over {rounds} round(s) "
                  f"({a:.1f} s vs {b:.1f} s; goal >= 1.8x for 2 vs 1 on 144 episodes)")


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
    ap.add_argument("--batch-envs", type=int, default=None, help="part 3 with this suite.batch_envs (group size)")
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
        extra = [f"suite.batch_envs={args.batch_envs}"] if args.batch_envs else []
        scaling(root, args.seeds, [int(w) for w in args.workers.split(",")], args.rounds, *extra)
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
