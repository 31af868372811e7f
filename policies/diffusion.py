"""The chunked diffusion action policy (Chi et al. 2023, scaled down for CPUs).

An observation history of ``n_obs_steps`` frames (low-dim state, optional images, the instruction)
is encoded once into a global condition; a denoiser turns Gaussian noise into a chunk of ``horizon``
normalized actions. Training uses DDPM (epsilon prediction); sampling uses deterministic DDIM
(eta = 0), so a chunk depends only on its initial noise, which is drawn per sample from its own seed.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from realgap.data.normalizer import Normalizer
from realgap.data.tokenizer import WordTokenizer
from realgap.errors import RealgapError
from realgap.policies.networks import (ConditionalUnet1D, ImageEncoder, InstructionEncoder, RowAttention,
                                       StateEncoder, TransformerDenoiser, named_row_weights)
from realgap.seeding import derive_seed

DEFAULTS: dict[str, Any] = {
    "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8,
    "state_keys": ["proprio", "object_state"], "image_keys": [],
    "state_feature_dim": 64, "state_hidden_dim": 128,
    "image_feature_dim": 64, "image_channels": [32, 64, 64], "image_keypoints": 32, "crop_size": 84,
    "instruction_dim": 32, "use_instruction": True,
    # key: e.g. object_state (null = off); mode "named": query q takes the row of the q-th item the
    # instruction names (row_names = the env catalogue order); "learned": attention keys learned from data
    "row_attention": {"key": None, "row_dim": 6, "n_queries": 2, "mode": "learned", "row_names": None},
    # with row_attention: also feed (selected row position - end effector position) * scale, in metres
    # before scaling; the env's proprio starts with the end-effector xyz, a row is [present, x, y, z, ...]
    "relative_position": {"enabled": False, "ee_key": "proprio", "ee_dims": [0, 1, 2], "row_dims": [1, 2, 3], "scale": 10.0},
    "denoiser": "unet", "down_dims": [64, 128, 256], "kernel_size": 5, "n_groups": 8, "step_embed_dim": 128,
    "transformer": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    "num_train_timesteps": 100, "num_inference_steps": 10, "beta_schedule": "squaredcos_cap_v2",
}


def sample_seeds(seed: int, num_samples: int) -> list[int]:
    """The noise seed of each of the ``num_samples`` chunks drawn under ``seed``."""
    return [derive_seed(int(seed), "chunk_noise", k) for k in range(num_samples)]


class DiffusionPolicy(nn.Module):
    """Holds encoders + denoiser + normalizer + tokenizer; ``shapes`` maps every obs key and 'action' to a shape."""

    def __init__(self, config: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], normalizer: Normalizer,
                 tokenizer: WordTokenizer):
        super().__init__()
        cfg = {**DEFAULTS, **dict(config)}
        self.config = cfg
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.normalizer, self.tokenizer = normalizer, tokenizer
        self.state_keys, self.image_keys = list(cfg["state_keys"]), list(cfg["image_keys"])
        for k in [*self.state_keys, *self.image_keys, "action"]:
            if k not in self.shapes:
                raise RealgapError(f"policy: no shape for observation key '{k}' (dataset has {sorted(self.shapes)})")
        self.horizon, self.n_obs_steps, self.n_action_steps = cfg["horizon"], cfg["n_obs_steps"], cfg["n_action_steps"]
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise RealgapError("policy: n_obs_steps - 1 + n_action_steps must be <= horizon")
        if cfg["denoiser"] == "unet" and self.horizon % (2 ** (len(cfg["down_dims"]) - 1)):
            raise RealgapError(f"policy.horizon: {self.horizon} must be divisible by 2^(len(down_dims)-1)")
        self.action_dim = self.shapes["action"][0]

        per_step = 0
        rows = cfg["row_attention"] or {}
        self.row_key = rows.get("key") if cfg["use_instruction"] else None
        if self.row_key is not None:
            if self.row_key not in self.state_keys:
                raise RealgapError(f"policy.row_attention.key: '{self.row_key}' is not one of state_keys {self.state_keys}")
            n_rows, rem = divmod(int(np.prod(self.shapes[self.row_key])), int(rows["row_dim"]))
            if rem:
                raise RealgapError(f"policy.row_attention.row_dim: {rows['row_dim']} does not divide {self.row_key}'s size")
            self.row_attn = RowAttention(n_rows, int(rows["row_dim"]), cfg["instruction_dim"], int(rows["n_queries"]))
            self.row_mode = rows.get("mode", "learned")
            if self.row_mode not in ("learned", "named"):
                raise RealgapError(f"policy.row_attention.mode: unknown '{self.row_mode}' (learned | named)")
            if self.row_mode == "named":
                names = rows.get("row_names")
                if names is None:
                    from realgap.envs.catalogue import ITEM_NAMES  # the env's object_state row order

                    names = list(ITEM_NAMES)
                    cfg["row_attention"] = {**rows, "row_names": names}  # saved with the checkpoint
                if len(names) != n_rows:
                    raise RealgapError(f"policy.row_attention.row_names: {len(names)} names for {n_rows} rows")
                self.row_names = [str(n).lower() for n in names]
        if self.state_keys:
            state_dim = sum(int(np.prod(self.shapes[k])) for k in self.state_keys)
            if self.row_key is not None:
                state_dim += int(rows["row_dim"]) * int(rows["n_queries"])
            rel = cfg["relative_position"] or {}
            self.relative = bool(rel.get("enabled")) and self.row_key is not None
            if self.relative:
                if rel["ee_key"] not in self.state_keys or len(rel["ee_dims"]) != len(rel["row_dims"]):
                    raise RealgapError("policy.relative_position: ee_key must be a state key and ee_dims match row_dims")
                state_dim += len(rel["row_dims"]) * int(rows["n_queries"])
            self.state_enc = StateEncoder(state_dim, cfg["state_feature_dim"], cfg["state_hidden_dim"])
            per_step += cfg["state_feature_dim"]
        self.image_enc = nn.ModuleDict({
            k: ImageEncoder(cfg["image_feature_dim"], cfg["image_channels"], cfg["image_keypoints"], cfg["n_groups"])
            for k in self.image_keys})
        per_step += cfg["image_feature_dim"] * len(self.image_keys)
        cond_dim = per_step * self.n_obs_steps
        if cfg["use_instruction"]:
            self.instr_enc = InstructionEncoder(len(tokenizer), cfg["instruction_dim"])
            cond_dim += cfg["instruction_dim"]
        if cfg["denoiser"] == "unet":
            self.denoiser = ConditionalUnet1D(self.action_dim, cond_dim, cfg["down_dims"], cfg["kernel_size"],
                                              cfg["n_groups"], cfg["step_embed_dim"])
        elif cfg["denoiser"] == "transformer":
            self.denoiser = TransformerDenoiser(self.action_dim, cond_dim, self.horizon,
                                                step_embed_dim=cfg["step_embed_dim"], **cfg["transformer"])
        else:
            raise RealgapError(f"policy.denoiser: unknown '{cfg['denoiser']}' (unet | transformer)")
        sched = dict(num_train_timesteps=cfg["num_train_timesteps"], beta_schedule=cfg["beta_schedule"],
                     clip_sample=True, prediction_type="epsilon")
        self.train_scheduler = DDPMScheduler(**sched)
        self.infer_scheduler = DDIMScheduler(**sched, set_alpha_to_one=True)

    # ------------------------------------------------------------ observation
    def to_tensors(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Raw batch (numpy (B, To, ...) per key, plus 'instruction': B strings) -> tensors."""
        out = {k: torch.as_tensor(np.asarray(obs[k])) for k in [*self.state_keys, *self.image_keys]}
        if self.config["use_instruction"]:
            texts = list(obs["instruction"])
            out["tokens"] = torch.as_tensor(self.tokenizer.encode(texts), dtype=torch.long)
            out["instructions"] = texts  # type: ignore[assignment]  # raw text, for name grounding
        return out

    def encode(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Global condition (B, C). A generator means training: images get a random crop, else the centre crop."""
        feats = []
        instr = self.instr_enc(obs["tokens"]) if self.config["use_instruction"] else None
        if self.state_keys:
            parts = {k: self.normalizer.normalize(k, obs[k].float().flatten(2)) for k in self.state_keys}
            x = [parts[k] for k in self.state_keys]
            if self.row_key is not None:
                w = named_row_weights(obs["instructions"], self.row_names, self.row_attn.n_queries) if self.row_mode == "named" else None
                x.append(self.row_attn(parts[self.row_key], instr, w))
                if self.relative:  # in raw units: "how far is the named object from the gripper"
                    rel = self.config["relative_position"]
                    raw_rows = self.row_attn(obs[self.row_key].float().flatten(2), instr, w)  # (B, T, Q*row_dim)
                    raw_rows = raw_rows.reshape(*raw_rows.shape[:2], self.row_attn.n_queries, -1)[..., rel["row_dims"]]
                    ee = obs[rel["ee_key"]].float().flatten(2)[..., rel["ee_dims"]].unsqueeze(2)
                    x.append(((raw_rows - ee) * float(rel["scale"])).flatten(2))
            feats.append(self.state_enc(torch.cat(x, dim=-1)))
        for k in self.image_keys:
            img = obs[k]
            b, t = img.shape[:2]
            img = img.reshape(b * t, *img.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
            feats.append(self.image_enc[k](self._crop(img, generator)).reshape(b, t, -1))
        cond = torch.cat(feats, dim=-1).flatten(1)
        if instr is not None:
            cond = torch.cat([cond, instr], dim=-1)
        return cond

    def _crop(self, img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        c = int(self.config["crop_size"])
        h, w = img.shape[-2:]
        if c >= min(h, w):
            return img
        if generator is None:
            top, left = (h - c) // 2, (w - c) // 2
            return img[..., top:top + c, left:left + c]
        tops = torch.randint(0, h - c + 1, (img.shape[0],), generator=generator)
        lefts = torch.randint(0, w - c + 1, (img.shape[0],), generator=generator)
        return torch.stack([im[:, t:t + c, l:l + c] for im, t, l in zip(img, tops.tolist(), lefts.tolist())])

    # --------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        obs = self.to_tensors(batch)
        actions = self.normalizer.normalize("action", torch.as_tensor(np.asarray(batch["action"])).float())
        cond = self.encode(obs, generator)
        noise = torch.randn(actions.shape, generator=generator)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (actions.shape[0],), generator=generator)
        noisy = self.train_scheduler.add_noise(actions, noise, t)
        return F.mse_loss(self.denoiser(noisy, t, cond), noise)

    # --------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_chunks(self, obs: Mapping[str, Any], num_samples: int = 1, seed: int | Sequence[int] | None = None,
                      sample_seed_lists: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """K action chunks per observation: (B, K, horizon, action_dim), unnormalized.

        The observation is encoded once and repeated over the K samples; every denoising step is one
        batched forward pass over B*K chunks. Chunk k of observation b starts from noise seeded with
        ``sample_seeds(seed[b], K)[k]`` (or ``sample_seed_lists[b][k]``), so results don't depend on
        B or on which other samples share the call.
        """
        tensors = self.to_tensors(obs)
        b = next(iter(tensors.values())).shape[0]
        k = int(num_samples)
        if sample_seed_lists is None:
            if seed is None:
                raise ValueError("sample_chunks needs seed or sample_seed_lists")
            seeds = [int(seed)] * b if np.isscalar(seed) else [int(s) for s in seed]
            if len(seeds) != b:
                raise ValueError(f"got {len(seeds)} seeds for {b} observations")
            sample_seed_lists = [sample_seeds(s, k) for s in seeds]
        noise = torch.stack([torch.randn((self.horizon, self.action_dim), generator=torch.Generator().manual_seed(int(s)))
                             for row in sample_seed_lists for s in row])
        if noise.shape[0] != b * k:
            raise ValueError(f"sample_seed_lists must be {b} x {k}")
        cond = self.encode(tensors).repeat_interleave(k, dim=0)
        x = noise
        sched = self.infer_scheduler
        sched.set_timesteps(int(self.config["num_inference_steps"]))
        for t in sched.timesteps:
            eps = self.denoiser(x, t.expand(x.shape[0]), cond)
            x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        actions = self.normalizer.unnormalize("action", x)
        return actions.reshape(b, k, self.horizon, self.action_dim).numpy()


class EMA:
    """Exponential moving average of weights with diffusion_policy's warmup (power 0.75, max 0.9999)."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999, inv_gamma: float = 1.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay, self.inv_gamma = power, max_decay, inv_gamma
        self.step = 0

    def decay(self) -> float:
        value = 1.0 - (1.0 + self.step / self.inv_gamma) ** (-self.power)
        return float(min(max(value, 0.0), self.max_decay))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.step += 1
