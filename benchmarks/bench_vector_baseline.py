"""realgap's suite vs the eval loop a user would write instead (LeRobot / diffusion_policy style). Prints figures.

    python benchmarks/bench_vector_baseline.py [--seeds 16] [--conditions nominal,target_lab,physics] [--workers 2]

Both sides run the same episodes (every condition x the same seeds), the same envs
(``realgap.envs.make`` with each condition's kwargs), the same policy (default: the shipped checkpoint
``checkpoints/state_policy``) and the same number of processes stepping envs (``--workers``):

- baseline: for each condition a ``gymnasium.vector.AsyncVectorEnv`` with one process per env
  (``--baseline-envs``, default = ``--workers``), episodes in batches of that size; the policy is
  called once per step on the whole batch in the main process, and every env keeps being stepped
  until all envs of the batch are done (finished ones keep stepping, their results ignored), as
  LeRobot's ``rollout()`` does. It records only success and length (less than realgap stores).
  Torch uses one thread, as realgap's workers do, so both sides compute the same actions;
- realgap: ``realgap suite`` with those conditions and seeds, ``record_frames=none``, local executor,
  ``--workers`` workers, writing its episode store (report off). Run twice: **cold** (the first suite of
  this process: a fresh worker pool, as ``realgap suite`` starts one) and **warm** (the same suite again
  on the pool it left, as the suites of a study or a sweep run).

Prints episodes/min of each, the ratios (goal >= 1.0x, target >= 1.3x), whether every episode's outcome
agrees, and the load average. The order of the two sides alternates with ``--order``.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import realgap.envs as envs  # noqa: E402
from realgap.cli import compose  # noqa: E402
from realgap.evaluation.plan import build_plan  # noqa: E402
from realgap.evaluation.policy_loader import load_policy  # noqa: E402
from realgap.evaluation.store import open_store  # noqa: E402
from realgap.evaluation.suite import run_suite  # noqa: E402


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def split(obs: dict, n: int) -> list[dict]:
    """A vector env's batched Dict observation -> one dict per env (what the policy protocol takes)."""
    return [{k: v[i] for k, v in obs.items()} for i in range(n)]


def baseline(plan, policy_spec: str, policy_kwargs: dict, n_envs: int) -> tuple[float, dict]:
    """The LeRobot-style loop; returns (seconds, {(condition, seed): (success, length)})."""
    import torch

    torch.set_num_threads(1)
    policy = load_policy(policy_spec, policy_kwargs)
    outcomes: dict = {}
    seeds = list(plan.seeds)
    start = time.perf_counter()
    for cond in plan.conditions:
        make = functools.partial(envs.make, plan.env_id, **plan.env_kwargs_for(cond))
        # gymnasium 1.4 pitfalls: a Text observation read back from shared memory is all 'a's, and
        # without shared memory a NEXT_STEP autoreset pending at the end of a batch survives reset()
        # (the next batch's first step resets with a random seed). So: no shared memory, no autoreset;
        # finished envs simply keep stepping until the batch is done, as in LeRobot's rollout().
        venv = gym.vector.AsyncVectorEnv([make] * n_envs, shared_memory=False,
                                         autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        for first in range(0, len(seeds), n_envs):
            batch = seeds[first:first + n_envs]
            batch = batch + [seeds[-1] + 1 + i for i in range(n_envs - len(batch))]  # pad; extras are ignored
            obs, _ = venv.reset(seed=[int(s) for s in batch])
            policy.reset(batch)
            done = np.zeros(n_envs, bool)
            steps = np.zeros(n_envs, int)
            while not done.all():
                actions = np.asarray(policy.act(split(obs, n_envs), list(range(n_envs))), np.float32)
                obs, _, terminated, truncated, info = venv.step(actions)
                success = np.asarray(info.get("is_success", np.zeros(n_envs, bool)), bool) & info.get(
                    "_is_success", np.ones(n_envs, bool))
                ended = ~done & (terminated | truncated | success)
                steps[~done] += 1
                for i in np.flatnonzero(ended):
                    if first + i < len(seeds) and (cond.name, batch[i]) not in outcomes:
                        outcomes[(cond.name, batch[i])] = (bool(success[i]), int(steps[i]))
                done |= ended
        venv.close()
    return time.perf_counter() - start, outcomes


def realgap_suite(out: Path, overrides: list[str]) -> tuple[float, dict]:
    cfg = compose("suite", [f"out={out}", "report.enabled=false", *overrides])
    start = time.perf_counter()
    run_suite(cfg, overwrite=True, progress=False)
    secs = time.perf_counter() - start
    infos = open_store(out / "episodes.zarr").episode_infos()
    return secs, {(i["condition"], int(i["seed"])): (bool(i["success"]), int(i["length"])) for i in infos}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--conditions", default="nominal,target_lab,physics")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-envs", type=int, default=None, help="envs (processes) of the vector env; default --workers")
    ap.add_argument("--policy", default="checkpoints/state_policy")
    ap.add_argument("--order", default="baseline,realgap", help="which side runs first")
    ap.add_argument("--out", default="/tmp/bench_vector_baseline")
    args = ap.parse_args()
    n_envs = args.baseline_envs or args.workers
    overrides = [f"suite.seeds.n={args.seeds}", f"conditions=[{args.conditions}]", f"suite.policy.spec={args.policy}",
                 "suite.record_frames=none", "executor=local", f"workers={args.workers}"]
    cfg = compose("suite", [f"out={args.out}", *overrides])
    suite = OmegaConf.to_container(cfg.suite, resolve=True)
    plan = build_plan(suite, list(cfg.conditions))
    n = plan.n_episodes
    print(f"bench_vector_baseline: {n} episodes ({len(plan.conditions)} conditions x {len(plan.seeds)} seeds), policy "
          f"{args.policy}; realgap local x{args.workers} (groups of {plan.batch_envs}) vs AsyncVectorEnv x{n_envs}; "
          f"{load_average()}")
    results = {}
    for side in args.order.split(","):
        if side == "baseline":
            results[side] = baseline(plan, args.policy, dict(suite["policy"].get("kwargs") or {}), n_envs)
            runs = [side]
        else:
            results["realgap cold"] = realgap_suite(Path(args.out), overrides)
            results["realgap warm"] = realgap_suite(Path(args.out), overrides)
            runs = ["realgap cold", "realgap warm"]
        for run in runs:
            secs = results[run][0]
            print(f"[{run}] {n} episodes in {secs:.1f} s = {60 * n / secs:.1f} episodes/min; {load_average()}")
    t_b, out_b = results["baseline"]
    sr_b = np.mean([s for s, _ in out_b.values()]) if out_b else float("nan")
    for run in ("realgap cold", "realgap warm"):
        t_r, out_r = results[run]
        same = sum(out_b.get(k) == v for k, v in out_r.items())
        sr_r = np.mean([s for s, _ in out_r.values()]) if out_r else float("nan")
        print(f"[outcomes] success rate {run} {sr_r:.3f}, baseline {sr_b:.3f}; same (success, length) for "
              f"{same}/{len(out_r)} episodes")
        print(f"[ratio] {run} / baseline episodes/min = {t_b / t_r:.2f}x (goal >= 1.0x, target >= 1.3x)")


if __name__ == "__main__":
    main()
