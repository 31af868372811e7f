"""One prepared session on a lent GPU: check the CUDA training path, time it, train candidate checkpoints.

    python scripts/gpu_session.py --data outputs/demos/demos_image.zarr --out DIR [--deadline-s 520]

Nothing in realgap depends on this script; it is how the GPU figures and checkpoints in the README were
made, in one call of a time-limited lease. In order:
1. smoke: a 40-step ``realgap train`` on cuda through every phase (encoder, freeze + cache, head), then
   the checkpoint loaded on the CPU and sampled (a GPU-trained checkpoint must run where users evaluate);
2. speed: ``benchmarks/bench_train.py`` on cuda (bf16 on and off) for the small and the full image config
   and the state config;
3. candidates: the training runs below, all at once on the one GPU (each process is bound by kernel
   launches, so they share it well), each scaled down if the measured speed says it would miss the
   deadline; rollouts are left to the CPU machine (the selection suite picks among the candidates);
4. packs each run's policy (model.safetensors, policy.json, curve) and the logs into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

T0 = time.time()
REPO = Path(__file__).resolve().parents[1]

# name: (policy, batch, encoder steps, total steps, seed, extra overrides). The small recipe is the shipped
# CPU checkpoint's (README), for a like-for-like time; the others use the GPU's room for bigger batches.
RUNS = {
    "small_recipe": ("diffusion_image_small", 64, 5000, 29000, 0, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "small_b256_s1": ("diffusion_image_small", 256, 8000, 32000, 1, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "small_b256_s2": ("diffusion_image_small", 256, 8000, 32000, 2, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "full_b256": ("diffusion_image", 256, 8000, 32000, 0, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "full_joint": ("diffusion_image", 128, 8000, 24000, 0, ["train.encoder_lr=1e-3"]),
    "state_learned": ("diffusion_state_learned", 256, 0, 60000, 0, []),
}
DEVICE = "cuda"
BENCH_STEPS = 25
BF16 = "false"
# --plan encoders: the encoder phase alone, long and with big batches (the phase a CPU is slow at: ~6 steps/s
# on 2 cores vs ~40 on the GPU), stopped one step into the head phase; the heads then train on the CPU by
# ``realgap train --resume`` with the full train.steps (the head phase runs as fast there as on the GPU).
ENCODER_RUNS = {
    "enc_full_b256": ("diffusion_image", 256, 4000, 4001, 0, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "enc_full_b128_s1": ("diffusion_image", 128, 5000, 5001, 1, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
    "enc_small_b256": ("diffusion_image_small", 256, 6000, 6001, 0, ["train.encoder_lr=1e-3", "train.freeze_encoder=true"]),
}
SHARE = 0.35  # assumed fraction of its solo speed a run keeps while all share the GPU (6 runs on an H200: ~0.55)


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f} s] {msg}", flush=True)


def sh(cmd: list[str], logfile: Path, timeout: float) -> int:
    log("$ " + " ".join(cmd))
    with open(logfile, "w") as f:
        try:
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return 124


def tail(path: Path, n: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


def smoke(data: str, work: Path) -> bool:
    out = work / "smoke"
    rc = sh([sys.executable, "-m", "realgap", "train", "--overwrite", "policy=diffusion_image_small",
             f"data.path={data}", f"out_dir={out}", f"train.device={DEVICE}", "train.steps=40", "train.encoder_pretrain_steps=20", "train.freeze_encoder=true",
             "train.val_every=20", "train.checkpoint_every=40", "train.rollout_every=0", "train.max_episodes=40",
             "train.warmup_steps=5"], work / "smoke.log", 150)
    if rc != 0:
        log(f"smoke: train failed (rc {rc}):\n{tail(work / 'smoke.log', 40)}")
        return False
    import numpy as np
    import torch

    from realgap.data.dataset import DemoDataset
    from realgap.policies.checkpoint import load_diffusion

    try:  # a failure here is reported, but does not stop the training runs
        model = load_diffusion(out)
        cfg = model.config
        ds = DemoDataset(data, ["proprio", "image_front"], cfg["horizon"], cfg["n_obs_steps"], cfg["n_action_steps"],
                         max_episodes=3)
        obs = ds.batch(ds.train, np.arange(2))
        obs.pop("action")
        chunks = {dev: load_diffusion(out).to(dev).sample_chunks(obs, num_samples=4, seed=[7, 8])
                  for dev in dict.fromkeys(["cpu", DEVICE])}
        diff = float(np.abs(chunks["cpu"] - chunks[DEVICE]).max())
        log(f"smoke: ok; the {DEVICE}-trained checkpoint sampled on {' and '.join(chunks)}: chunks "
            f"{chunks['cpu'].shape}, max |cpu - {DEVICE}| = {diff:.2e}; torch {torch.__version__}")
    except Exception as e:  # noqa: BLE001
        log(f"smoke: training ok, sampling check FAILED: {type(e).__name__}: {e}")
    return True


def bench(data: str, work: Path, out: Path) -> dict:
    rates = {}
    for policy, batches, phases, bf16 in [("diffusion_image_small", "64,256", "encoder,head,joint", "on,off"),
                                          ("diffusion_image", "128,256", "encoder,head,joint", "on"),
                                          ("diffusion_state_learned", "256", "head", "on")]:
        js = work / f"bench_{policy}.json"
        rc = sh([sys.executable, str(REPO / "benchmarks/bench_train.py"), "--data", data, "--policy", policy, "--devices", DEVICE,
                 "--batches", batches, "--phases", phases, "--bf16", bf16, "--steps", str(BENCH_STEPS), "--warmup", str(max(1, BENCH_STEPS // 3)),
                 "--repeats", "3" if BENCH_STEPS > 5 else "1", "--max-episodes", "100", "--json", str(js)], work / f"bench_{policy}.log", 120)
        print(tail(work / f"bench_{policy}.log", 14), flush=True)
        if rc == 0:
            for r in json.loads(js.read_text())["rows"]:
                if r["bf16"] or DEVICE == "cpu":
                    rates[(policy, r["batch"], r["phase"])] = r["steps_per_s"]
    return rates


def plan(rates: dict, seconds: float) -> dict:
    """Steps per run: the recipe's, scaled down (encoder and total alike) to fit ``seconds`` at SHARE."""
    fitted = {}
    for name, (policy, batch, enc, total, seed, extra) in RUNS.items():
        second = "head" if "train.freeze_encoder=true" in extra or enc == 0 else "joint"
        r_enc = rates.get((policy, batch, "encoder"), 10.0) * SHARE
        r_2nd = rates.get((policy, batch, second), 10.0) * SHARE
        need = 30 + enc / r_enc + (total - enc) / r_2nd  # 30 s: start, data, caching, checkpoints
        scale = min(1.0, seconds / need)
        e = max(1, int(enc * scale)) if enc else 0
        fitted[name] = (e, max(e + 20, int(total * scale)), need)
        log(f"plan {name}: {policy} batch {batch}, {second}; recipe needs ~{need:.0f} s at {SHARE} share -> "
            f"scale {scale:.2f}: {fitted[name][0]} encoder + {fitted[name][1] - fitted[name][0]} steps")
    return fitted


def train_all(data: str, work: Path, fitted: dict, deadline: float) -> dict:
    procs = {}
    for name, (policy, batch, _, _, seed, extra) in RUNS.items():
        enc, total, _ = fitted[name]
        cmd = [sys.executable, "-m", "realgap", "train", "--overwrite", f"policy={policy}", f"data.path={data}",
               f"out_dir={work / name}", f"train.device={DEVICE}", f"train.batch_size={batch}", f"train.steps={total}", f"train.seed={seed}",
               f"train.encoder_pretrain_steps={enc}", "train.rollout_every=0",
               f"train.val_every={min(1000, max(10, total // 4))}", f"train.checkpoint_every={min(2000, max(10, total // 2))}",
               f"train.bf16={BF16}",
               *extra]
        log("$ " + " ".join(cmd))
        procs[name] = subprocess.Popen(cmd, stdout=open(work / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(5)
    status = {}
    for name, p in procs.items():
        if p.poll() is None:
            p.kill()
            status[name] = "killed at the deadline (last checkpoint kept)"
        else:
            status[name] = f"rc {p.returncode}"
        log(f"{name}: {status[name]}\n{tail(work / f'{name}.log', 4)}")
    return status


def pack(work: Path, out: Path, status: dict, fitted: dict) -> None:
    """One archive per run (the device returns at most 8 files) and one with the logs and figures."""
    for name in RUNS:
        run = work / name
        if not (run / "model.safetensors").exists():
            continue
        curve = json.loads((run / "curve.json").read_text()) if (run / "curve.json").exists() else []
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
            for f in ("model.safetensors", "policy.json", "curve.json", "curve.csv", "train_state.json",
                      "train_state.safetensors"):
                if (run / f).exists():
                    tar.add(run / f, arcname=f"{name}/{f}")
            tar.add(work / f"{name}.log", arcname=f"{name}/train.log")
        last = curve[-1] if curve else {}
        log(f"packed {name}: {status.get(name)}, planned {fitted[name][:2]}, last row step {last.get('step')} "
            f"val {last.get('val_loss')} elapsed {last.get('elapsed_s')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline-s", type=float, default=520.0, help="from the script's start: training stops here")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the whole script on this machine")
    ap.add_argument("--bench-steps", type=int, default=25)
    ap.add_argument("--plan", choices=["candidates", "encoders"], default="candidates")
    ap.add_argument("--bf16", choices=["true", "false"], default="false", help="train.bf16 of the runs (slower here)")
    args = ap.parse_args()
    global DEVICE, BENCH_STEPS, BF16
    DEVICE, BENCH_STEPS, BF16 = args.device, args.bench_steps, args.bf16
    out, work = Path(args.out).resolve(), Path("/tmp/gpu_session")
    data = str(Path(args.data).resolve())
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # not the repo root, whose realgap/ folder would shadow the installed package
    deadline = T0 + args.deadline_s
    if DEVICE == "cuda":
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"])
    if args.plan == "candidates" and not smoke(data, work):
        with tarfile.open(out / "session.tar.gz", "w:gz") as tar:
            tar.add(work / "smoke.log", arcname="session/smoke.log")
        sys.exit(1)
    if args.plan == "encoders":
        RUNS.clear()
        RUNS.update(ENCODER_RUNS)
        rates, fitted = {}, {n: (r[2], r[3], 0.0) for n, r in RUNS.items()}
    else:
        rates = bench(data, work, out)
        fitted = plan(rates, deadline - time.time() - 15)
    status = train_all(data, work, fitted, deadline)
    pack(work, out, status, fitted)
    (work / "session.json").write_text(json.dumps({"status": status, "fitted": fitted,
                                                   "rates": {"|".join(map(str, k)): v for k, v in rates.items()}}, indent=1))
    with tarfile.open(out / "session.tar.gz", "w:gz") as tar:
        for f in sorted(work.glob("*.log")) + sorted(work.glob("*.json")):
            tar.add(f, arcname=f"session/{f.name}")
    log("done")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
