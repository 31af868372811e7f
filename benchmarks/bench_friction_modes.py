"""Does friction DR reach the contacts? The scripted expert under one friction factor, two ways.

    python benchmarks/bench_friction_modes.py [--episodes 40] [--factor 0.3]

``per_geom`` on the objects alone (what per-geom DR mostly amounts to: contacts keep the partner's larger
friction) against ``global`` (one factor on every geom, the default). Physics axis only, mass/damping/kp nominal.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import yaml  # noqa: E402

import realgap.envs as envs  # noqa: E402
from realgap.envs.expert import ScriptedExpert  # noqa: E402
from realgap.envs.expert_eval import run_episode  # noqa: E402
from realgap.evaluation.stats import wilson  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "realgap" / "conf" / "randomization" / "default.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--factor", type=float, default=0.3)
    ap.add_argument("--seed-start", type=int, default=7_000_000)
    args = ap.parse_args()
    base = yaml.safe_load(CONF.read_text())
    for mode, geoms in (("per_geom", ".*(block|vial)"), ("global", ".*")):
        cfg = copy.deepcopy(base)
        for axis in cfg["axes"]:
            cfg["axes"][axis]["enabled"] = axis == "physics"
        cfg["axes"]["physics"].update(friction_mode=mode, geoms=geoms, friction=[args.factor] * 2,
                                      mass=[1.0, 1.0], damping=[1.0, 1.0], kp=[1.0, 1.0])
        env = envs.make("realgap/PlaceInReceptacle-v0", randomization=cfg)
        expert = ScriptedExpert(env)
        k = sum(run_episode(env, expert, args.seed_start + i)["success"] for i in range(args.episodes))
        env.close()
        w = wilson(k, args.episodes)
        print(f"{mode:8s} geoms={geoms:16s} friction x{args.factor:g}: {k}/{args.episodes} = {w.estimate:.3f} "
              f"[{w.low:.3f}, {w.high:.3f}]")


if __name__ == "__main__":
    main()
