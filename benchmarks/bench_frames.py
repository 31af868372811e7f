"""Render only what is kept: episodes/min of the same suite with record_frames=none, failures, all.

    python benchmarks/bench_frames.py [--seeds 16] [--workers 1] [--rounds 2] [--out /tmp/bench_frames]

With ``failures`` (the default suite's setting) episodes run without rendering and only the kept ones
(failures, plus the first ``frames_first_seeds`` seeds) are replayed with frames afterwards. Goal: the
``failures`` suite at >= 90% of the episodes/min of ``none``. The modes are run in alternating order,
``--rounds`` times, on the same seeds, and the ratio uses the summed times. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from realgap.cli import compose  # noqa: E402
from realgap.evaluation.store import open_store  # noqa: E402
from realgap.evaluation.suite import run_suite  # noqa: E402


def run(out: Path, frames: str, seeds: int, workers: int | None) -> tuple[float, int, int]:
    over = [f"out={out}", "report.enabled=false", f"suite.seeds.n={seeds}", f"suite.record_frames={frames}"]
    if workers:
        over.append(f"workers={workers}")
    cfg = compose("suite", over)
    t0 = time.perf_counter()
    run_suite(cfg, overwrite=True, progress=False)
    elapsed = time.perf_counter() - t0
    infos = open_store(out / "episodes.zarr").episode_infos()
    return elapsed, len(infos), sum(bool(i.get("frames")) for i in infos)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="none,failures,all")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_frames"))
    a = ap.parse_args()
    modes = a.modes.split(",")
    total = {m: [0.0, 0, 0] for m in modes}
    for r in range(a.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):  # alternate the order: load drifts cancel out
            s, n, kept = run(a.out / m, m, a.seeds, a.workers)
            total[m][0] += s
            total[m][1] += n
            total[m][2] = kept
            print(f"round {r + 1} {m:>8}: {n} episodes in {s:.1f} s = {60 * n / s:.1f} episodes/min ({kept} with frames)",
                  flush=True)
    rate = {m: 60 * t[1] / t[0] for m, t in total.items()}
    for m in modes:
        print(f"{m:>8}: {rate[m]:.1f} episodes/min over {a.rounds} rounds ({total[m][2]} episodes keep frames)")
    if "none" in rate:
        for m in modes:
            if m != "none":
                print(f"record_frames={m} runs at {rate[m] / rate['none']:.2f} of record_frames=none")


if __name__ == "__main__":
    main()
