"""``realgap train``: train the chunked diffusion policy on scripted-expert demonstrations.

Everything random is a named stream of ``train.seed``: batch ``i`` draws its windows from
``stream(seed, "train_batch", i)`` and its noise from ``derive_seed(seed, "train_noise", i)``, so a
resumed run continues exactly as an uninterrupted one would (the checkpoint holds weights, EMA, AdamW
moments and the step; no RNG state is needed). Every ``checkpoint_every`` steps the output directory
gets the EMA policy (``load_policy``), the training state and the learning curve (curve.csv / .json).
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap.data.dataset import DemoDataset
from realgap.errors import RealgapError
from realgap.outputs import prepare_dir
from realgap.policies.checkpoint import check_spaces, load_train_state, save_policy, save_train_state
from realgap.policies.diffusion import DEFAULTS, EMA, DiffusionPolicy
from realgap.policies.executor import RecedingHorizonExecutor
from realgap.policies.rollout import rollout_success
from realgap.seeding import derive_seed, stream

CURVE_FIELDS = ["step", "lr", "train_loss", "val_loss", "success_rate", "n_rollouts", "elapsed_s", "phase"]
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``train.device``: auto = cuda when a GPU is visible, else cpu."""
    name = str(name)
    if name not in DEVICES:
        raise RealgapError(f"train.device: unknown '{name}' ({' | '.join(DEVICES)})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RealgapError("train.device: cuda requested but no CUDA GPU is visible to torch (use train.device=auto or cpu)")
    return torch.device(name)


def validate(cfg: DictConfig) -> None:
    t = cfg.train
    for field in ("steps", "batch_size", "checkpoint_every", "val_every"):
        if int(t[field]) < 1:
            raise RealgapError(f"train.{field}: must be >= 1, got {t[field]}")
    if not 0 < float(t.lr) < 1:
        raise RealgapError(f"train.lr: must be in (0, 1), got {t.lr}")
    if int(t.warmup_steps) < 0:
        raise RealgapError(f"train.warmup_steps: must be >= 0, got {t.warmup_steps}")
    if int(t.seed) < 0:
        raise RealgapError(f"train.seed: must be >= 0, got {t.seed}")
    pre = int(t.get("encoder_pretrain_steps", 0) or 0)
    if not 0 <= pre < int(t.steps):
        raise RealgapError(f"train.encoder_pretrain_steps: must be in [0, train.steps), got {pre}")
    if (pre or t.get("freeze_encoder")) and not (cfg.policy.get("image_keys") and cfg.policy.get("image_encoder") == "film"
                                                 and (cfg.policy.get("image_aux") or {}).get("enabled")):
        raise RealgapError("train.encoder_pretrain_steps / freeze_encoder: need an image policy with "
                           "image_encoder: film and image_aux.enabled: true")
    resolve_device(t.get("device", "auto"))
    if cfg.policy.denoiser not in ("unet", "transformer"):
        raise RealgapError(f"policy.denoiser: unknown '{cfg.policy.denoiser}' (unet | transformer)")


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def write_curve(out: Path, rows: list[dict]) -> None:
    (out / "curve.json").write_text(json.dumps(rows, indent=1))
    with open(out / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(rows)


@torch.no_grad()
def validation_loss(model: DiffusionPolicy, dataset: DemoDataset, seed: int, batches: int, batch_size: int,
                    encoder_only: bool = False) -> float | None:
    if dataset.val is None:
        return None
    losses = []
    for i in range(batches):  # the same windows and noise at every evaluation, so values are comparable
        windows = stream(seed, "val_batch", i).integers(0, len(dataset.val), batch_size)
        g = torch.Generator().manual_seed(derive_seed(seed, "val_noise", i))
        batch = dataset.batch(dataset.val, windows)
        losses.append((model.encoder_loss(batch, g) if encoder_only else model.compute_loss(batch, g)).item())
    return float(np.mean(losses))


def frozen_modules(policy: DiffusionPolicy) -> list[torch.nn.Module]:
    """What train.freeze_encoder freezes: the image encoders and the instruction encoder that FiLMs them."""
    return [policy.image_enc, policy.instr_enc]


@torch.no_grad()
def cache_image_features(policy: DiffusionPolicy, dataset: DemoDataset, chunk: int = 256) -> None:
    """Run the frozen encoder once per frame (centre crop, its episode's instruction) and let batches carry
    ``cached:<image key>`` instead of images: the diffusion head then trains at the state policy's speed."""
    policy.eval()
    n = int(dataset.episode_ends[-1])
    for k in policy.image_keys:
        parts = []
        for a in tqdm(range(0, n, chunk), desc=f"cache {k}", unit="chunk", leave=False):
            frames = dataset.frames(np.arange(a, min(n, a + chunk)), keys=[k])
            obs = policy.to_tensors(frames)
            feat, aux = policy.encode_images(obs, policy.instr_enc(obs["tokens"]))[k][:2]
            parts.append(torch.cat([feat, aux], dim=-1)[:, 0].float())
        dataset.arrays[f"cached:{k}"] = torch.cat(parts).to(dataset.arrays[k].device if isinstance(dataset.arrays[k], torch.Tensor) else "cpu")
        if isinstance(dataset.arrays["action"], np.ndarray):
            dataset.arrays[f"cached:{k}"] = dataset.arrays[f"cached:{k}"].numpy()
        dataset.obs_keys = [f"cached:{k}" if o == k else o for o in dataset.obs_keys]
    label = policy.config["image_aux"]["label_key"]
    if label not in policy.state_keys:
        dataset.obs_keys = [o for o in dataset.obs_keys if o != label]


def train_step(policy: DiffusionPolicy, ema: EMA, opt: torch.optim.Optimizer, dataset: DemoDataset, seed: int,
               step: int, batch_size: int, amp: bool, frame_pool: np.ndarray | None = None) -> float:
    """One optimizer step; its batch and noise are the named streams of (seed, step). ``frame_pool``: the
    encoder phase (single frames, the auxiliary position loss only), else the diffusion loss on windows.
    Returns the loss; a non-finite loss leaves weights, optimizer and EMA untouched."""
    g = torch.Generator().manual_seed(derive_seed(seed, "train_noise", step))
    policy.train()
    with torch.autocast(device_type=policy.device.type, dtype=torch.bfloat16, enabled=amp):
        if frame_pool is not None:
            picks = frame_pool[stream(seed, "train_frames", step).integers(0, len(frame_pool), batch_size)]
            loss = policy.encoder_loss(dataset.frames(picks), g)
        else:
            windows = stream(seed, "train_batch", step).integers(0, len(dataset.train), batch_size)
            loss = policy.compute_loss(dataset.batch(dataset.train, windows), g)
    value = loss.item()
    if not math.isfinite(value):
        return value
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema.update(policy)
    return value


def freeze_encoder(policy: DiffusionPolicy, ema: EMA, dataset: DemoDataset) -> None:
    """End of the encoder phase (train.freeze_encoder): freeze it, copy it into the EMA model (so rollouts
    use the encoder the cached features came from) and cache its features for every frame."""
    for m_raw, m_ema in zip(frozen_modules(policy), frozen_modules(ema.model)):
        m_raw.requires_grad_(False)
        m_ema.load_state_dict(m_raw.state_dict())
    cache_image_features(policy, dataset)


def check_rollout_env(cfg: DictConfig, policy: DiffusionPolicy) -> None:
    """train.rollout_every runs episodes in the env of ``data``: it must give every observation the policy
    reads, with the shapes it trains on (checked before the first step, not found at the first check)."""
    from realgap.data.collect import make_env

    env = make_env(cfg.data, None)
    try:
        check_spaces(policy, env.observation_space, env.action_space,
                     where=f"train.rollout_every: the env of data={cfg.data.get('name', cfg.data.path)} (pass the "
                           "demos' data config, e.g. data=demos_image, or train.rollout_every=0)")
    finally:
        env.close()


def rollout_rate(model: DiffusionPolicy, cfg: DictConfig) -> float:
    from realgap.data.collect import make_env

    seeds = [int(cfg.train.rollout_seed_start) + i for i in range(int(cfg.train.rollout_episodes))]
    executor = RecedingHorizonExecutor(model)
    ok = rollout_success(lambda: make_env(cfg.data, None), executor, seeds, batch=int(cfg.train.rollout_batch))
    return float(np.mean(ok))


def presence_rows(policy_cfg) -> dict[str, int]:
    """The policy's row-structured key (row_attention: rows [present, ...]), for the normalizer."""
    ra = policy_cfg.get("row_attention") or {}
    return {ra["key"]: int(ra.get("row_dim", 6))} if ra.get("key") else {}


def row_kinds(policy_cfg) -> dict[str, list[str]]:
    """Object or receptacle, per row of the row-structured key (the normalizer pools a held-out row
    over trained rows of its kind); rows in the env catalogue order unless row_names says otherwise."""
    from realgap.envs.catalogue import ITEM_NAMES, RECEPTACLE_NAMES

    ra = policy_cfg.get("row_attention") or {}
    if not ra.get("key"):
        return {}
    names = [str(n).lower() for n in (ra.get("row_names") or ITEM_NAMES)]
    return {ra["key"]: ["receptacle" if n in RECEPTACLE_NAMES else "object" for n in names]}


def load_dataset(cfg: DictConfig, policy_cfg: dict) -> DemoDataset:
    """The demos the policy trains on: its observation keys, plus (image policies with image_aux) the
    privileged labels and the items' pixels, which only the training losses read."""
    t = cfg.train
    keys = [*policy_cfg["state_keys"], *policy_cfg["image_keys"]]
    aux = policy_cfg.get("image_aux") or {}
    if policy_cfg.get("image_keys") and aux.get("enabled"):  # privileged training labels, never a policy input
        keys.append(aux.get("label_key", "object_state"))
    dataset = DemoDataset(cfg.data.path, list(dict.fromkeys(keys)),
                          policy_cfg["horizon"], policy_cfg["n_obs_steps"], policy_cfg["n_action_steps"],
                          val_ratio=float(t.val_ratio), seed=int(t.seed), max_episodes=t.get("max_episodes"),
                          presence_rows=presence_rows(policy_cfg), row_kinds=row_kinds(policy_cfg))
    if aux.get("enabled") and aux.get("pointer"):  # where the named items are in each frame (training labels)
        aux = {**DEFAULTS["image_aux"], **aux}
        for k in policy_cfg["image_keys"]:
            dataset.add_pixel_labels(k, aux["label_key"], int(aux["row_dim"]), aux["pos_dims"],
                                     ee=(aux["ee_key"], aux["ee_dims"]))
    return dataset


def init_policy(policy_cfg: dict, dataset: DemoDataset, seed: int, device: torch.device) -> DiffusionPolicy:
    """The seeded initial policy on ``device``; on a GPU the dataset moves there too, so that batches
    are gathered on the device and the loader never starves it."""
    with torch.random.fork_rng():  # initialisation draws from torch's global RNG: seed it, then restore it
        torch.manual_seed(derive_seed(seed, "policy_init"))
        policy = DiffusionPolicy(policy_cfg, dataset.shapes(), dataset.normalizer, dataset.tokenizer)
    policy.to(device)
    if device.type == "cuda":
        dataset.to_device(device)  # a few hundred MB at most
    return policy


def main(cfg: DictConfig, resume: bool = False, overwrite: bool = False) -> int:
    validate(cfg)
    t = cfg.train
    out = Path(cfg.out_dir)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    device = resolve_device(t.get("device", "auto"))
    dataset = load_dataset(cfg, policy_cfg)
    torch.set_num_threads(int(t.torch_threads))
    seed = int(t.seed)
    policy = init_policy(policy_cfg, dataset, seed, device)
    if int(t.rollout_every or 0) and int(t.rollout_episodes) > 0:
        check_rollout_env(cfg, policy)
    prepare_dir(out, resume, overwrite, field="out_dir", marker="train_state.json", what="training run")  # after the config and data proved valid
    ema = EMA(policy, power=float(t.ema_power))
    opt = torch.optim.AdamW(policy.parameters(), lr=float(t.lr), betas=tuple(t.betas), weight_decay=float(t.weight_decay))
    start, rows = 0, []
    if resume:
        meta = load_train_state(out, policy, ema.model, opt)
        start, ema.step, rows = int(meta["step"]), int(meta["ema_step"]), list(meta.get("curve", []))
    total = int(t.steps)
    pre = int(t.get("encoder_pretrain_steps", 0) or 0)
    freeze = bool(t.get("freeze_encoder", False))
    amp = device.type == "cuda" and bool(t.get("bf16", False))
    frame_pool = dataset.train_steps() if pre else None
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"train: {len(dataset.train_episodes)} train / {len(dataset.val_episodes)} val episodes, "
          f"{len(dataset.train)} windows, {n_params / 1e6:.2f}M parameters, {device}{' bf16' if amp else ''} -> {out}")
    cached = False
    t0 = time.time() - (rows[-1]["elapsed_s"] if rows else 0.0)
    running: list[float] = []
    bar = tqdm(range(start, total), initial=start, total=total, desc="train", unit="step")
    for step in bar:
        encoder_phase = step < pre
        if not encoder_phase and freeze and not cached:
            freeze_encoder(policy, ema, dataset)
            cached = True
        if encoder_phase:
            lr = lr_at(step, float(t.get("encoder_lr") or t.lr), int(t.warmup_steps), pre)
        else:
            lr = lr_at(step - pre, float(t.lr), int(t.warmup_steps), total - pre)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = train_step(policy, ema, opt, dataset, seed, step, int(t.batch_size), amp,
                          frame_pool if encoder_phase else None)
        if not math.isfinite(loss):
            bar.close()
            kept = f"last good checkpoint kept in {out}" if (out / "model.safetensors").exists() else "no checkpoint written"
            raise RealgapError(f"train: loss is {loss} at step {step} (try a lower train.lr); {kept}")
        running.append(loss)
        bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
        done = step + 1
        if done % int(t.val_every) == 0 or done == total:
            row = {"step": done, "lr": lr, "train_loss": float(np.mean(running)), "val_loss": None,
                   "success_rate": None, "n_rollouts": 0, "elapsed_s": 0.0,
                   "phase": "encoder" if encoder_phase else "policy"}
            running = []
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                row["val_loss"] = validation_loss(ema.model, dataset, seed, int(t.val_batches), int(t.batch_size),
                                                  encoder_only=encoder_phase)
            every = int(t.rollout_every or 0)
            if every and int(t.rollout_episodes) > 0 and not encoder_phase and (done % every == 0 or done == total):
                row["success_rate"] = rollout_rate(ema.model, cfg)
                row["n_rollouts"] = int(t.rollout_episodes)
            row["elapsed_s"] = time.time() - t0
            rows.append(row)
            bar.write("train: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in row.items() if v is not None))
        if done % int(t.checkpoint_every) == 0 or done == total:
            save_policy(out, ema.model)  # (weights are copied to the CPU by safetensors)
            save_train_state(out, policy, ema.model, ema.step, opt, done,
                             {"curve": rows, "config": OmegaConf.to_container(cfg, resolve=True)})
            write_curve(out, rows)
    bar.close()
    print(f"train: done, {total} steps in {time.time() - t0:.0f} s; policy in {out} (realgap.policies.load_policy)")
    return 0
