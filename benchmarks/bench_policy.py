"""Inference cost of one replan (sample_chunks) at K = 1, 8, 32 samples for one observation.

    python benchmarks/bench_policy.py [--checkpoint DIR [DIR ...]] [--threads 1] [--repeats 30] [--module-path] [--gemm-floor]

Without a checkpoint it builds the default state policy (conf/policy/diffusion_state_oracle.yaml) with random
weights and a synthetic observation: cost depends on the architecture only. Targets (one core): K=1 <= 12 ms
per replan (state policy) and K=8 <= 1.5x K=1. Every (checkpoint, K) pair is timed interleaved in one run,
so a change in machine load hits them all alike; the same thread count is used for every K.
--module-path also times the previous sampling path (the U-Net's modules, not ``networks.UnetSampler``),
interleaved with the current one. --gemm-floor times the sampler's GEMMs alone (the same operands, replayed)
for one replan at each K: what K=8 costs over K=1 even if every other op cost nothing extra.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager

import numpy as np
import torch
from omegaconf import OmegaConf

from realgap.cli import compose
from realgap.data.normalizer import Normalizer
from realgap.data.tokenizer import WordTokenizer, catalogue_words
from realgap.policies.checkpoint import load_diffusion
from realgap.policies.diffusion import DiffusionPolicy
from realgap.policies.networks import ConditionalUnet1D


def default_policy(policy_name: str) -> DiffusionPolicy:
    cfg = OmegaConf.to_container(compose("train", [f"policy={policy_name}"]).policy, resolve=True)
    shapes = {"proprio": (8,), "object_state": (66,), "image_front": (64, 64, 3), "action": (4,)}
    rng = np.random.default_rng(0)
    norm = Normalizer.fit({k: rng.normal(size=(64, *shapes[k])) for k in ["proprio", "object_state", "action"]})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return DiffusionPolicy(cfg, shapes, norm, WordTokenizer(catalogue_words() + ["place", "the", "in"])).eval()


def synthetic_obs(policy: DiffusionPolicy) -> dict:
    rng = np.random.default_rng(1)
    obs = {}
    for k in [*policy.state_keys, *policy.image_keys]:
        shape = (1, policy.n_obs_steps, *policy.shapes[k])
        obs[k] = rng.integers(0, 255, shape, dtype=np.uint8) if k.startswith("image") else rng.normal(size=shape).astype(np.float32)
    obs["instruction"] = ["place the red block in the yellow rack"]
    return obs


@contextmanager
def sampling_path(path: str):
    """'sampler': the current path; 'module': the U-Net's own modules (what sampling ran before UnetSampler)."""
    if path == "sampler":
        yield
        return
    current = ConditionalUnet1D.sampler
    ConditionalUnet1D.sampler = lambda self: None
    try:
        yield
    finally:
        ConditionalUnet1D.sampler = current


def gemm_seconds(policy: DiffusionPolicy, obs: dict, k: int, repeats: int) -> float:
    """Median time of one replan's sampler GEMMs alone: record one DDIM step's operands (every step has the same
    shapes), then replay them once per step; operands stay in cache as they are when the sampler makes them."""
    calls, addmm = [], torch.addmm

    def record(bias, a, w):
        calls.append((bias, a, w))
        return addmm(bias, a, w)

    torch.addmm = record  # the sampler's convs call torch.addmm; nn.Linear layers (encoders) do not
    try:
        policy.sample_chunks(obs, k, seed=0)
    finally:
        torch.addmm = addmm
    steps = int(policy.config["num_inference_steps"])
    step = calls[: len(calls) // steps]
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                for bias, a, w in step:
                    addmm(bias, a, w)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="*", default=None, help="one or more checkpoint folders, timed in one run")
    ap.add_argument("--policy", default="diffusion_state", help="config when no checkpoint is given")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ks", default="1,8,32", help="numbers of samples per replan; the first is the reference")
    ap.add_argument("--module-path", action="store_true", help="also time the previous (module) sampling path")
    ap.add_argument("--gemm-floor", action="store_true", help="also time the sampler's GEMMs alone at each K")
    args = ap.parse_args()
    paths = ["sampler", "module"] if args.module_path else ["sampler"]
    torch.set_num_threads(args.threads)
    names = args.checkpoint or [args.policy]
    policies = [load_diffusion(c) for c in args.checkpoint] if args.checkpoint else [default_policy(args.policy)]
    obs = [synthetic_obs(p) for p in policies]
    ks = [int(k) for k in args.ks.split(",")]
    print(f"torch threads {args.threads}, load avg {os.getloadavg()[0]:.1f} (start)")
    for p, o in zip(policies, obs):
        for path in paths:
            with sampling_path(path):
                for k in ks:
                    p.sample_chunks(o, k, seed=0)  # warm-up
    times: dict[tuple, list[float]] = {(i, path, k): [] for i in range(len(policies)) for path in paths for k in ks}
    for r in range(args.repeats):  # interleaved, so a change in machine load hits every policy, path and K alike
        for i, (p, o) in enumerate(zip(policies, obs)):
            for path in paths:
                with sampling_path(path):
                    for k in ks:
                        t0 = time.perf_counter()
                        p.sample_chunks(o, k, seed=r)
                        times[(i, path, k)].append(time.perf_counter() - t0)
    for i, (name, p) in enumerate(zip(names, policies)):
        print(f"policy: {name}, {sum(q.numel() for q in p.parameters()) / 1e6:.2f}M params, "
              f"{p.config['num_inference_steps']} DDIM steps, horizon {p.horizon}")
        for path in paths:
            med = {k: 1000 * float(np.median(times[(i, path, k)])) for k in ks}
            label = "" if path == "sampler" else " [module path, before UnetSampler]"
            for k in ks:
                print(f"  K={k:3d}: {med[k]:7.2f} ms per replan (median of {args.repeats}), {med[k] / k:6.2f} ms per chunk, "
                      f"{med[k] / med[ks[0]]:4.2f}x K={ks[0]}{label}")
            if 1 in ks and 8 in ks:
                print(f"  targets{label}: K=1 {med[1]:.1f} ms (<= 12 ms: {'met' if med[1] <= 12 else 'NOT met'}); "
                      f"K=8 / K=1 = {med[8] / med[1]:.2f} (<= 1.5: {'met' if med[8] / med[1] <= 1.5 else 'NOT met'})")
        if args.gemm_floor and 1 in ks and 8 in ks:
            g1, g8 = (1000 * gemm_seconds(p, obs[i], k, args.repeats) for k in (1, 8))
            k1 = 1000 * float(np.median(times[(i, "sampler", 1)]))
            print(f"  GEMMs alone: K=1 {g1:.2f} ms, K=8 {g8:.2f} ms per replan -> floor K=8 / K=1 >= {(k1 + g8 - g1) / k1:.2f}")
    print(f"load avg {os.getloadavg()[0]:.1f} (end)")


if __name__ == "__main__":
    main()
