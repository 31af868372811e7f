"""Memory over a long suite: main-process and worker RSS after warm-up vs at the end. Prints figures.

    python benchmarks/bench_memory.py [--episodes 2000] [--workers 2] [--executor local] [--policy expert]
    python benchmarks/bench_memory.py --episodes 10000          # the 10,000-episode figure (goal: <= 5%)

Runs the default suite's conditions (all of them) with enough seeds for ``--episodes`` episodes, a cheap
policy (the scripted expert by default, so the rollouts, not the policy, dominate) and
``record_frames=none`` unless ``--frames`` says otherwise. A thread samples the RSS of this process (the
suite's main process: plan, store writer, bookkeeping) and of every worker once a second, against the
number of episodes stored so far. "After warm-up" is the mean over the samples taken while the
``--warmup`` fraction of episodes (default 10%) up to twice that were stored; "end" is the mean over the
last 10% of episodes. Growth = end / warm-up - 1 (goal <= 5%). Also prints the load average.

``--tracemalloc`` also diffs Python allocations (main process) between warm-up and end, by traceback,
to find what the main process keeps per episode.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from realgap.cli import compose  # noqa: E402
from realgap.evaluation import store as store_mod  # noqa: E402
from realgap.evaluation.suite import run_suite  # noqa: E402


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


class Sampler:
    """Samples (episodes stored, main RSS, {worker pid: RSS}) every ``period`` seconds."""

    def __init__(self, period: float = 1.0):
        self.period, self.episodes = period, 0
        self.samples: list[tuple[int, float, dict[int, float]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.period):
            workers = {p.pid: rss_mb(p.pid) for p in mp.active_children()}
            self.samples.append((self.episodes, rss_mb(), {k: v for k, v in workers.items() if v == v}))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def window(samples, lo: float, hi: float):
    return [s for s in samples if lo <= s[0] <= hi]


def summarize(samples, total: int, warmup: float) -> None:
    warm = window(samples, warmup * total, 2 * warmup * total)
    end = window(samples, 0.9 * total, total)
    if not warm or not end:
        print(f"[memory] too few samples ({len(samples)}) for the windows; run more episodes")
        return
    main_w, main_e = np.mean([s[1] for s in warm]), np.mean([s[1] for s in end])
    peak = max(s[1] for s in samples)
    print(f"[memory] main process RSS: after warm-up ({warmup:.0%}-{2 * warmup:.0%} of episodes) {main_w:.1f} MB, "
          f"end (last 10%) {main_e:.1f} MB, peak {peak:.1f} MB -> growth {100 * (main_e / main_w - 1):+.1f}% "
          f"(goal <= 5%); {1024 * (main_e - main_w) / max(1, np.mean([s[0] for s in end]) - np.mean([s[0] for s in warm])):.2f} KB "
          f"per episode")
    deciles = []
    for k in range(10):
        w = window(samples, k * total / 10, (k + 1) * total / 10)
        deciles.append(f"{np.mean([s[1] for s in w]):.0f}" if w else "-")
    print(f"[memory] main process RSS (MB) by tenth of the episodes: {' '.join(deciles)}")
    pids = sorted({p for s in samples for p in s[2]})
    for pid in pids:
        w = [s[2][pid] for s in warm if pid in s[2]]
        e = [s[2][pid] for s in end if pid in s[2]]
        if w and e:
            tenths = []
            for k in range(10):
                t = [s[2][pid] for s in window(samples, k * total / 10, (k + 1) * total / 10) if pid in s[2]]
                tenths.append(f"{np.mean(t):.0f}" if t else "-")
            print(f"[memory] worker {pid} RSS (MB) by tenth: {' '.join(tenths)}")
            print(f"[memory] worker {pid} RSS: after warm-up {np.mean(w):.1f} MB, end {np.mean(e):.1f} MB -> growth "
                  f"{100 * (np.mean(e) / np.mean(w) - 1):+.1f}% (goal <= 5%)")
        else:
            print(f"[memory] worker {pid}: not alive in both windows (replaced or started late)")
    if len(pids) > 0:
        print(f"[memory] {len(pids)} worker process(es) seen over the run (more than --workers means workers were replaced)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="local", choices=("local", "inline"))
    ap.add_argument("--policy", default="expert", help="suite.policy.spec (default: the scripted expert, cheap)")
    ap.add_argument("--frames", default="none", help="suite.record_frames")
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--out", default="/tmp/bench_memory")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar (for logs)")
    args = ap.parse_args()

    probe = compose("suite", [])
    n_conditions = len(probe.suite.conditions)
    seeds = math.ceil(args.episodes / n_conditions)
    overrides = [f"out={args.out}", "report.enabled=false", f"suite.seeds.n={seeds}",
                 f"suite.policy.spec={args.policy}", f"suite.record_frames={args.frames}",
                 f"executor={args.executor}", f"workers={args.workers}"]
    print(f"bench_memory: {seeds * n_conditions} episodes ({n_conditions} conditions x {seeds} seeds), "
          f"{args.executor} x{args.workers if args.executor == 'local' else 1}, policy {args.policy}, "
          f"frames {args.frames}; {load_average()}")
    cfg = compose("suite", overrides)
    sampler = Sampler()
    snapshots = []
    total = seeds * n_conditions
    append = store_mod.EpisodeWriter.append

    def counting_append(self, episodes):  # count stored episodes for the sampler (and snapshot)
        out = append(self, episodes)
        sampler.episodes += len(episodes)
        if args.tracemalloc:
            import tracemalloc

            if not snapshots and sampler.episodes >= args.warmup * total:
                gc.collect()
                tracemalloc.start(12)
                snapshots.append(tracemalloc.take_snapshot())
            elif len(snapshots) == 1 and sampler.episodes >= total:
                gc.collect()
                snapshots.append(tracemalloc.take_snapshot())
        return out

    store_mod.EpisodeWriter.append = counting_append
    start = time.perf_counter()
    with sampler:
        run_suite(cfg, overwrite=True, progress=not args.quiet)
    secs = time.perf_counter() - start
    print(f"bench_memory: {total} episodes in {secs:.0f} s ({60 * total / secs:.0f} episodes/min); {load_average()}")
    summarize(sampler.samples, total, args.warmup)
    if len(snapshots) == 2:
        print("[tracemalloc] main process: largest Python allocation growth between warm-up and end")
        for stat in snapshots[1].compare_to(snapshots[0], "traceback")[:8]:
            print(f"  {stat.size_diff / 1024:+9.1f} KB in {stat.count_diff:+6d} blocks, allocated at (most recent last):")
            for frame in list(stat.traceback)[-10:]:
                print(f"      {frame.filename}:{frame.lineno}")


if __name__ == "__main__":
    main()
