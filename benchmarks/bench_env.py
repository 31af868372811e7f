"""Env throughput: steps/s (state-only, with rendering, with every DR axis on) and render fps.

    python benchmarks/bench_env.py [--steps 1000] [--image-size 96]

One env, one process. Pin it to one core (``taskset -c 0``) for the per-core figures.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

import realgap.envs as envs
from realgap.seeding import stream

CONF = pathlib.Path(__file__).resolve().parents[1] / "realgap" / "conf"


def steps_per_second(label: str, n_steps: int, episode_len: int = 50, **kwargs) -> float:
    env = envs.make("realgap/PlaceInReceptacle-v0", **kwargs)
    rng = stream(0, "bench")
    actions = rng.uniform(-1, 1, (n_steps, 4)).astype(np.float32)
    env.reset(seed=0)
    start = time.perf_counter()
    for i in tqdm(range(n_steps), desc=label, leave=False):
        if i % episode_len == 0:
            env.reset(seed=i)
        env.step(actions[i])
    rate = n_steps / (time.perf_counter() - start)
    env.close()
    print(f"{label:<34s} {rate:8.1f} env steps/s  ({n_steps} steps, reset every {episode_len})")
    return rate


def render_fps(n_frames: int, image_size: int) -> float:
    env = envs.make("realgap/PlaceInReceptacle-v0", obs_mode="image", image_size=image_size)
    env.reset(seed=0)
    u = env.unwrapped
    u._render("front", image_size)  # create the renderer outside the timing
    start = time.perf_counter()
    for _ in range(n_frames):
        u._render("front", image_size)
    fps = n_frames / (time.perf_counter() - start)
    env.close()
    print(f"{'render front ' + str(image_size) + 'x' + str(image_size):<34s} {fps:8.1f} frames/s ({n_frames} frames)")
    return fps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=96)
    args = p.parse_args()
    dr = OmegaConf.to_container(OmegaConf.load(CONF / "randomization" / "default.yaml"))
    render_fps(2000, args.image_size)
    steps_per_second("state only", args.steps)
    steps_per_second(f"state+image (front {args.image_size})", args.steps, obs_mode="state+image",
                     image_size=args.image_size)
    steps_per_second("state, all DR axes (default.yaml)", args.steps, randomization=dr)
    steps_per_second("state+image, all DR axes", args.steps, obs_mode="state+image", image_size=args.image_size,
                     randomization=dr)


if __name__ == "__main__":
    main()
