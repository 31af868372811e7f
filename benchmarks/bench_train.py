"""Training speed: optimizer steps per second of ``realgap train``'s own step, per phase, device and batch size.

    python benchmarks/bench_train.py --data outputs/demos/demos_image.zarr [--policy diffusion_image_small]
        [--devices cpu,cuda] [--batches 64,256] [--bf16 on,off] [--steps 60] [--warmup 10] [--threads 2]

Phases (the image policy's two-phase recipe, README "Training"): ``encoder`` (single frames, the auxiliary
pointer/position loss only), ``head`` (the diffusion loss on windows, encoder frozen and its features
cached once per frame), ``joint`` (the diffusion + auxiliary loss through the encoder, nothing frozen).
Each figure is the median of ``--repeats`` timed blocks of ``--steps`` steps after ``--warmup`` steps,
the device synchronised at block ends. Policies without an image encoder time ``head`` alone (their
only phase). Prints a table and, with --json, writes the figures. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from realgap.cli import compose
from realgap.policies.diffusion import EMA
from realgap.policies.train import freeze_encoder, init_policy, load_dataset, train_step


def time_phase(policy, ema, opt, dataset, phase: str, batch: int, amp: bool, steps: int, warmup: int,
               repeats: int) -> float:
    pool = dataset.train_steps() if phase == "encoder" else None
    sync = torch.cuda.synchronize if policy.device.type == "cuda" else (lambda: None)
    step = 0

    def block(n: int) -> float:
        nonlocal step
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            train_step(policy, ema, opt, dataset, 0, step, batch, amp, pool)
            step += 1
        sync()
        return time.perf_counter() - t0

    block(warmup)
    return steps / float(np.median([block(steps) for _ in range(repeats)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a demos zarr (realgap collect data=demos_image)")
    ap.add_argument("--policy", default="diffusion_image_small")
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--bf16", default="on", help="on,off: bf16 autocast on cuda (cpu always runs float32)")
    ap.add_argument("--phases", default="encoder,head,joint")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--max-episodes", type=int, default=200, help="demo episodes loaded (speed does not depend on it)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose("train", [f"policy={args.policy}", f"data.path={args.data}", f"train.max_episodes={args.max_episodes}"])
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    has_encoder = bool(policy_cfg.get("image_keys")) and (policy_cfg.get("image_aux") or {}).get("enabled")
    phases = [p for p in args.phases.split(",") if has_encoder or p == "head"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"bench_train: policy={args.policy}, torch {torch.__version__}, cpu threads {args.threads}, gpu: {gpu}")
    rows = []
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            print("bench_train: cuda asked for but not visible; skipped")
            continue
        for amp in sorted({device == "cuda" and b == "on" for b in args.bf16.split(",")}):
            for batch in [int(b) for b in args.batches.split(",")]:
                for phase in phases:  # a fresh model per figure: the head phase freezes the encoder
                    dataset = load_dataset(cfg, policy_cfg)
                    policy = init_policy(policy_cfg, dataset, 0, torch.device(device))
                    ema = EMA(policy)
                    if phase == "head" and has_encoder:
                        freeze_encoder(policy, ema, dataset)
                    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
                    rate = time_phase(policy, ema, opt, dataset, phase, batch, amp, args.steps, args.warmup, args.repeats)
                    row = {"device": device, "bf16": amp, "batch": batch, "phase": phase, "steps_per_s": rate,
                           "samples_per_s": rate * batch}
                    rows.append(row)
                    print(f"  {device:4s} bf16={str(amp):5s} batch={batch:4d} {phase:7s} {rate:8.1f} steps/s "
                          f"{rate * batch:9.0f} samples/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": args.policy, "gpu": gpu, "threads": args.threads, "torch": torch.__version__,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
