"""Env throughput against its floors: raw MuJoCo physics and an empty scene's render. Prints figures.

    python benchmarks/bench_env.py [--steps 1000] [--image-size 96] [--seconds 3]
    taskset -c 1 python benchmarks/bench_env.py      # the per-core figures

One env, one process. Every ratio is measured within one run (side by side, interleaved in rounds),
so it survives a loaded machine better than the absolute rates; the load average is printed too.

1. physics: the env's ``step()`` (gym.make wrappers included, state obs, random actions, a reset every
   50 steps) vs raw ``mj_step(nstep=substeps)`` from exactly the states the env's steps started from
   (recorded in a first pass): env time / raw physics time = substeps x raw steps/s / (env steps/s x
   substeps); goal <= 1.5x;
2. render at ``--image-size``: the env's front camera vs the floor, an empty scene (same visual
   settings, light and camera, no geoms) rendered the same way; update_scene and render() timed apart;
3. env steps/s for state / state+image / with every DR axis (default.yaml).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import realgap.envs as envs  # noqa: E402
from realgap.envs import scene as S  # noqa: E402
from realgap.seeding import stream  # noqa: E402

CONF = pathlib.Path(__file__).resolve().parents[1] / "realgap" / "conf"
ENV_ID = "realgap/PlaceInReceptacle-v0"
EPISODE_LEN = 50  # reset every this many env steps (resets are part of a suite's cost)


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _timed(fn, seconds: float) -> tuple[int, float]:
    """Call ``fn(i)`` for i = 0, 1, ... until ``seconds`` have passed; returns (calls, elapsed)."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn(n)
        n += 1
    return n, elapsed


def physics(n_steps: int, rounds: int = 3) -> None:
    """The env's step() vs raw mj_step on exactly the states the env visits (recorded, then replayed)."""
    env = envs.make(ENV_ID)
    u = env.unwrapped
    actions = stream(0, "bench").uniform(-1, 1, (n_steps, 4)).astype(np.float32)
    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    states: list[np.ndarray] = []
    substeps = u._substeps

    def recording() -> None:  # the state each block of substeps starts from (ctrl already set)
        states.append(np.empty(mujoco.mj_stateSize(u.model, kind)))
        mujoco.mj_getState(u.model, u.data, states[-1], kind)
        substeps()

    def episodes() -> float:
        start = time.perf_counter()
        for i, a in enumerate(actions):
            if i % EPISODE_LEN == 0:
                env.reset(seed=i)
            env.step(a)
        return time.perf_counter() - start

    u._substeps = recording
    episodes()
    u._substeps = substeps

    def raw() -> float:
        start = time.perf_counter()
        for state in states:
            mujoco.mj_setState(u.model, u.data, state, kind)
            mujoco.mj_step(u.model, u.data, nstep=S.N_SUBSTEPS)
        return time.perf_counter() - start

    env_t = raw_t = 0.0
    for _ in range(rounds):  # interleaved, so load changes hit both sides alike
        env_t += episodes()
        raw_t += raw()
    env.close()
    raw_rate = rounds * len(states) * S.N_SUBSTEPS / raw_t
    env_rate = rounds * n_steps / env_t
    print(f"[physics] raw mj_step {raw_rate:,.0f} steps/s (the same {len(states)} blocks of {S.N_SUBSTEPS} substeps, "
          f"from the recorded states); env {env_rate:,.1f} env steps/s = {S.N_SUBSTEPS * env_rate:,.0f} physics "
          f"steps/s -> env time / raw physics time = {env_t / raw_t:.2f}x (goal <= 1.5x; the env's time includes "
          f"a reset every {EPISODE_LEN} steps, {rounds} rounds)")


def empty_scene(size: int) -> str:
    """The floor: realgap's render settings, light and front camera, and nothing to draw."""
    return (f'<mujoco model="empty">{S.visual_xml(size)}<worldbody>{S.MAIN_LIGHT}{S.front_camera_xml()}'
            "</worldbody></mujoco>")


def _renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A renderer set up as the env sets up its own (shadow and reflection passes off)."""
    r = mujoco.Renderer(model, size, size)
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
        r.scene.flags[flag] = 0
    return r


def render(size: int, seconds: float, rounds: int = 3) -> None:
    env = envs.make(ENV_ID, obs_mode="image", image_size=size)
    env.reset(seed=0)
    u = env.unwrapped
    u._render("front", size)  # the env's own renderer, created outside the timing
    scene_r = u._claim(size)  # the renderer the env draws with
    empty_m = mujoco.MjModel.from_xml_string(empty_scene(size))
    empty_d = mujoco.MjData(empty_m)
    mujoco.mj_forward(empty_m, empty_d)
    empty_r = _renderer(empty_m, size)
    m = u.model
    shown = m.geom_group.copy()  # this episode's groups: absent items hidden by the env

    def only(geoms) -> None:
        m.geom_group[:] = 5  # hidden by the default mjvOption
        m.geom_group[geoms] = 0

    def drawn(groups, fn):
        def side(i):
            m.geom_group[:] = groups
            fn(i)
            m.geom_group[:] = shown
        return side

    item_bodies = set(u._obj_body + u._rec_body)
    present = [g for g in range(m.ngeom) if shown[g] != 5 and int(m.body_rootid[m.geom_bodyid[g]]) in item_bodies]
    parts = {"table": [m.geom("table").id],
             "gripper": [g for g in range(m.ngeom) if m.geom_bodyid[g] in u._gripper_bodies],
             "present items": present}
    breakdown = {}
    for name, geoms in parts.items():
        only(geoms)
        breakdown[name] = m.geom_group.copy()
    m.geom_group[:] = shown
    sides = {
        "scene, env._render (update_scene + render)": lambda i: u._render("front", size),
        "scene with parked items drawn too (before)": drawn(u._geom_group, lambda i: u._render("front", size)),
        **{f"scene, only {k} ({len(parts[k])} geoms)": drawn(g, lambda i: u._render("front", size))
           for k, g in breakdown.items()},
        "scene, update_scene only": lambda i: scene_r.update_scene(u.data, camera="front"),
        "scene, render() only": lambda i: scene_r.render(),
        "empty scene (floor), update_scene + render": lambda i: (empty_r.update_scene(empty_d, camera="front"),
                                                                  empty_r.render()),
        "empty scene, render() only": lambda i: empty_r.render(),
    }
    totals = {k: [0, 0.0] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            n, t = _timed(fn, seconds / rounds / len(sides) * 4)
            totals[k][0] += n
            totals[k][1] += t
    for k, (n, t) in totals.items():
        print(f"[render {size}x{size}] {k:<44s} {n / t:8.1f} frames/s  ({1e3 * t / n:.3f} ms/frame)")
    scene_fps = totals["scene, env._render (update_scene + render)"]
    floor_fps = totals["empty scene (floor), update_scene + render"]
    print(f"[render {size}x{size}] (the scene has {int(np.sum(shown != 5))} of {m.ngeom} geoms shown this episode; "
          f"each part's time includes the floor)")
    print(f"[render {size}x{size}] scene / floor time per frame = {(scene_fps[1] / scene_fps[0]) / (floor_fps[1] / floor_fps[0]):.2f}x "
          f"(goal >= 1000 frames/s for the scene)")
    empty_r.close()
    env.close()


def steps_per_second(label: str, n_steps: int, **kwargs) -> float:
    env = envs.make(ENV_ID, **kwargs)
    actions = stream(0, "bench").uniform(-1, 1, (n_steps, 4)).astype(np.float32)
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(n_steps):
        if i % EPISODE_LEN == 0:
            env.reset(seed=i)
        env.step(actions[i])
    rate = n_steps / (time.perf_counter() - start)
    env.close()
    print(f"[env] {label:<34s} {rate:8.1f} env steps/s  ({n_steps} steps, reset every {EPISODE_LEN})")
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="env steps per configuration in part 3")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--physics-steps", type=int, default=500, help="env steps per round in part 1 (3 rounds)")
    p.add_argument("--seconds", type=float, default=6.0, help="time per side in part 2")
    p.add_argument("--parts", default="123")
    args = p.parse_args()
    print(f"bench_env: {load_average()}; affinity {sorted(os.sched_getaffinity(0))}; mujoco {mujoco.__version__}")
    if "1" in args.parts:
        physics(args.physics_steps)
    if "2" in args.parts:
        render(args.image_size, args.seconds)
    if "3" in args.parts:
        dr = OmegaConf.to_container(OmegaConf.load(CONF / "randomization" / "default.yaml"))
        steps_per_second("state only", args.steps)
        steps_per_second(f"state+image (front {args.image_size})", args.steps, obs_mode="state+image",
                         image_size=args.image_size)
        steps_per_second("state, all DR axes (default.yaml)", args.steps, randomization=dr)
        steps_per_second("state+image, all DR axes", args.steps, obs_mode="state+image", image_size=args.image_size,
                         randomization=dr)
    print(f"bench_env: done; {load_average()}")


if __name__ == "__main__":
    main()
