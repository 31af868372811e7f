"""The chunked diffusion action policy (Chi et al. 2023, scaled down for CPUs).

An observation history of ``n_obs_steps`` frames (low-dim state, optional images, the instruction)
is encoded once into a global condition; a denoiser turns Gaussian noise into a chunk of ``horizon``
normalized actions. Training uses DDPM (epsilon prediction); sampling uses deterministic DDIM
(eta = 0), so a chunk depends only on its initial noise, which is drawn per sample from its own seed.
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import contextmanager
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realgap.data.normalizer import Normalizer
from realgap.data.tokenizer import WordTokenizer
from realgap.errors import RealgapError
from realgap.policies.networks import (ConditionalUnet1D, FiLMImageEncoder, ImageEncoder, InstructionEncoder,
                                       PositionalInstructionEncoder, RowAttention, StateEncoder, TransformerDenoiser,
                                       named_row_weights)
from realgap.seeding import derive_seed

POINTERS = 3  # the image policy's pointer maps: named object, named receptacle, gripper

DEFAULTS: dict[str, Any] = {
    "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8,
    "state_keys": ["proprio", "object_state"], "image_keys": [],
    "state_feature_dim": 64, "state_hidden_dim": 128,
    "image_feature_dim": 64, "image_channels": [32, 64, 64], "image_keypoints": 32, "crop_size": 84,
    "instruction_dim": 32, "use_instruction": True,
    "instruction_encoder": "bag",   # bag: mean of word embeddings | positional: + position embeddings, MLP
    "image_encoder": "plain",       # plain: CNN + spatial softmax | film: every conv block FiLM-ed by the instruction
    "image_strides": None,          # film encoder: stride per conv layer (default 2, 1, 1, ...)
    # film encoder only: an auxiliary read-out trained to predict item positions from the image. Its labels
    # (label_key rows of the items the instruction names, and every row's [present, position]) are
    # privileged and used in *training only*; at inference the policy sees images, proprio and words.
    # as_input: the predicted positions of the named pair, and their offset from the end effector, feed the policy.
    "image_aux": {"enabled": False, "label_key": "object_state", "row_dim": 6, "pos_dims": [1, 2, 3],
                  "row_names": None, "scale": 10.0, "weight": 1.0, "dense_weight": 0.5, "as_input": True,
                  "ee_key": "proprio", "ee_dims": [0, 1, 2],
                  # pointer: the named pair's positions come from instruction-queried attention maps
                  # (networks.InstructionPointer) instead of a read-out of the generic keypoints
                  "pointer": False, "pixel_weight": 0.2},
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


BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


def alphas_cumprod(num_train_timesteps: int, beta_schedule: str) -> torch.Tensor:
    """float32 cumulative products of (1 - beta), computed as diffusers' schedulers do (tested equal)."""
    n = int(num_train_timesteps)
    if beta_schedule == "squaredcos_cap_v2":  # GLIDE's cosine schedule, betas capped at 0.999
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                             dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(0.0001, 0.02, n, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(0.0001 ** 0.5, 0.02 ** 0.5, n, dtype=torch.float32) ** 2
    else:
        raise RealgapError(f"policy.beta_schedule: unknown '{beta_schedule}' ({' | '.join(BETA_SCHEDULES)})")
    return torch.cumprod(1.0 - betas, dim=0)


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
        self.film = cfg["image_encoder"] == "film"
        if cfg["image_encoder"] not in ("plain", "film"):
            raise RealgapError(f"policy.image_encoder: unknown '{cfg['image_encoder']}' (plain | film)")
        if self.film and self.image_keys and not cfg["use_instruction"]:
            raise RealgapError("policy.image_encoder: film needs use_instruction: true")
        aux = {**DEFAULTS["image_aux"], **(cfg.get("image_aux") or {})}
        cfg["image_aux"] = aux
        self.aux = bool(aux["enabled"]) and self.film and bool(self.image_keys)
        aux_dim, aux_in = 0, 0
        if self.aux:
            lk = aux["label_key"]
            if lk not in self.shapes:
                raise RealgapError(f"policy.image_aux.label_key: no shape for '{lk}' (dataset has {sorted(self.shapes)})")
            n_rows, rem = divmod(int(np.prod(self.shapes[lk])), int(aux["row_dim"]))
            if rem:
                raise RealgapError(f"policy.image_aux.row_dim: {aux['row_dim']} does not divide {lk}'s size")
            if aux["row_names"] is None:
                from realgap.envs.catalogue import ITEM_NAMES  # label rows in the env catalogue order

                aux["row_names"] = list(ITEM_NAMES)
            if len(aux["row_names"]) != n_rows:
                raise RealgapError(f"policy.image_aux.row_names: {len(aux['row_names'])} names for {n_rows} rows")
            npos = len(aux["pos_dims"])
            self.aux_pair_dim = 2 * npos                       # named object + named receptacle positions
            self.aux_uv_dim = 2 * POINTERS if aux["pointer"] else 0  # (u, v) of object, receptacle, gripper
            aux_dim = self.aux_pair_dim + self.aux_uv_dim + n_rows * (1 + npos)  # + every row's [present, position]
            if aux["as_input"]:
                if aux["ee_key"] not in self.state_keys or len(aux["ee_dims"]) != npos:
                    raise RealgapError("policy.image_aux: ee_key must be a state key and ee_dims match pos_dims")
                # pair, pair - gripper; with pointers also the gripper's (u, v) and the pair's (u, v) offsets from it
                aux_in = (2 * self.aux_pair_dim + self.aux_uv_dim) * len(self.image_keys)
        self.aux_as_input = self.aux and bool(aux["as_input"])
        if self.state_keys:
            state_dim = sum(int(np.prod(self.shapes[k])) for k in self.state_keys) + aux_in
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
        if self.film:
            strides = cfg["image_strides"] or [2] + [1] * (len(cfg["image_channels"]) - 1)
            if len(strides) != len(cfg["image_channels"]):
                raise RealgapError("policy.image_strides: one stride per image_channels entry")
            self.image_enc = nn.ModuleDict({
                k: FiLMImageEncoder(cfg["image_feature_dim"], cfg["instruction_dim"], cfg["image_channels"], strides,
                                    cfg["image_keypoints"], cfg["n_groups"], aux_dim,
                                    pointers=POINTERS if self.aux and aux["pointer"] else 0,
                                    pointer_dim=len(aux["pos_dims"])) for k in self.image_keys})
        else:
            self.image_enc = nn.ModuleDict({
                k: ImageEncoder(cfg["image_feature_dim"], cfg["image_channels"], cfg["image_keypoints"], cfg["n_groups"])
                for k in self.image_keys})
        per_step += cfg["image_feature_dim"] * len(self.image_keys)
        cond_dim = per_step * self.n_obs_steps
        if cfg["use_instruction"]:
            if cfg["instruction_encoder"] == "positional":
                self.instr_enc = PositionalInstructionEncoder(len(tokenizer), cfg["instruction_dim"], tokenizer.max_len)
            elif cfg["instruction_encoder"] == "bag":
                self.instr_enc = InstructionEncoder(len(tokenizer), cfg["instruction_dim"])
            else:
                raise RealgapError(f"policy.instruction_encoder: unknown '{cfg['instruction_encoder']}' (bag | positional)")
            cond_dim += cfg["instruction_dim"]
        if cfg["denoiser"] == "unet":
            self.denoiser = ConditionalUnet1D(self.action_dim, cond_dim, cfg["down_dims"], cfg["kernel_size"],
                                              cfg["n_groups"], cfg["step_embed_dim"])
        elif cfg["denoiser"] == "transformer":
            self.denoiser = TransformerDenoiser(self.action_dim, cond_dim, self.horizon,
                                                step_embed_dim=cfg["step_embed_dim"], **cfg["transformer"])
        else:
            raise RealgapError(f"policy.denoiser: unknown '{cfg['denoiser']}' (unet | transformer)")
        if cfg["beta_schedule"] not in BETA_SCHEDULES:
            raise RealgapError(f"policy.beta_schedule: unknown '{cfg['beta_schedule']}' ({' | '.join(BETA_SCHEDULES)})")

    # diffusers is imported only where a scheduler object is needed (training's add_noise, tests): sampling
    # uses the precomputed table below, so a suite worker does not pay diffusers' ~1.2 s import.
    def _scheduler_kwargs(self) -> dict:
        return dict(num_train_timesteps=self.config["num_train_timesteps"], beta_schedule=self.config["beta_schedule"],
                    clip_sample=True, prediction_type="epsilon")

    @functools.cached_property
    def train_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self._scheduler_kwargs())

    @functools.cached_property
    def infer_scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self._scheduler_kwargs(), set_alpha_to_one=True)

    # ------------------------------------------------------------ observation
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_tensors(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """Raw batch ((B, To, ...) per key as numpy or tensors, plus 'instruction': B strings) -> tensors
        on the model's device. Also passes through cached image features and auxiliary labels."""
        dev = self.device
        keys = [*self.state_keys, *self.image_keys, *(k for k in obs if k.startswith(("cached:", "pixels:")))]
        if self.aux and self.config["image_aux"]["label_key"] in obs:
            keys.append(self.config["image_aux"]["label_key"])
        out: dict[str, Any] = {}
        for k in dict.fromkeys(keys):
            if k in obs:
                v = obs[k]
                out[k] = (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(dev, non_blocking=True)
        if self.config["use_instruction"]:
            texts = list(obs["instruction"])
            out["tokens"] = torch.as_tensor(self.tokenizer.encode(texts), dtype=torch.long).to(dev)
            out["instructions"] = texts  # raw text, for name grounding (state oracle) and training labels
        return out

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` outside the vocabulary (they are encoded as <unk>)."""
        return self.tokenizer.unknown_words(text)

    def encode_images(self, obs: Mapping[str, Any], instr: torch.Tensor | None,
                      generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per image key: (features (B, T, F), auxiliary position read-out (B, T, A)); cached when given."""
        out = {}
        for k in self.image_keys:
            if f"cached:{k}" in obs:  # frozen encoder: features computed once per frame (train.freeze_encoder)
                c = obs[f"cached:{k}"].float()
                fdim = int(self.config["image_feature_dim"])
                out[k] = (c[..., :fdim], c[..., fdim:])
                continue
            img = obs[k]
            b, t = img.shape[:2]
            img = img.reshape(b * t, *img.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
            img, tops, lefts = self._crop_with_offsets(img, generator)
            maps = None
            if self.film:
                feat, aux, maps = self.image_enc[k](img, instr.repeat_interleave(t, dim=0), with_maps=True)
            else:
                feat = self.image_enc[k](img)
                aux = feat[:, :0]
            out[k] = (feat.reshape(b, t, -1), aux.reshape(b, t, -1))
            if maps is not None and generator is not None:  # training: what the pixel loss needs
                out[k] += ({"log_att": maps, "tops": tops, "lefts": lefts, "crop": img.shape[-1]},)
        return out

    def encode(self, obs: Mapping[str, Any], generator: torch.Generator | None = None,
               images: dict | None = None) -> torch.Tensor:
        """Global condition (B, C). A generator means training: images get a random crop, else the centre crop."""
        feats = []
        instr = self.instr_enc(obs["tokens"]) if self.config["use_instruction"] else None
        if images is None:
            images = self.encode_images(obs, instr, generator)
        if self.state_keys:
            parts = {k: self.normalizer.normalize(k, obs[k].float().flatten(2)) for k in self.state_keys}
            x = [parts[k] for k in self.state_keys]
            if self.row_key is not None:
                w = named_row_weights(obs["instructions"], self.row_names, self.row_attn.n_queries) if self.row_mode == "named" else None
                w = None if w is None else w.to(self.device)
                x.append(self.row_attn(parts[self.row_key], instr, w))
                if self.relative:  # in raw units: "how far is the named object from the gripper"
                    rel = self.config["relative_position"]
                    raw_rows = self.row_attn(obs[self.row_key].float().flatten(2), instr, w)  # (B, T, Q*row_dim)
                    raw_rows = raw_rows.reshape(*raw_rows.shape[:2], self.row_attn.n_queries, -1)[..., rel["row_dims"]]
                    ee = obs[rel["ee_key"]].float().flatten(2)[..., rel["ee_dims"]].unsqueeze(2)
                    x.append(((raw_rows - ee) * float(rel["scale"])).flatten(2))
            if self.aux_as_input:  # the encoder's estimate of where the named pair is, and how far from the gripper
                aux = self.config["image_aux"]
                ee = obs[aux["ee_key"]].float().flatten(2)[..., aux["ee_dims"]] * float(aux["scale"])
                for k in self.image_keys:
                    pair = images[k][1][..., : self.aux_pair_dim]
                    x += [pair, (pair.reshape(*pair.shape[:2], 2, -1) - ee.unsqueeze(2)).flatten(2)]
                    if self.aux_uv_dim:  # image-space offsets: robust to where the camera happens to be
                        uv = images[k][1][..., self.aux_pair_dim: self.aux_pair_dim + self.aux_uv_dim]
                        uv = uv.reshape(*uv.shape[:2], POINTERS, 2)
                        x += [uv[:, :, 2], (uv[:, :, :2] - uv[:, :, 2:]).flatten(2)]
            feats.append(self.state_enc(torch.cat(x, dim=-1)))
        for k in self.image_keys:
            feats.append(images[k][0])
        cond = torch.cat(feats, dim=-1).flatten(1)
        if instr is not None:
            cond = torch.cat([cond, instr], dim=-1)
        return cond

    def _crop(self, img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self._crop_with_offsets(img, generator)[0]

    def _crop_with_offsets(self, img: torch.Tensor, generator: torch.Generator | None):
        """(crops, tops, lefts): random crops in training (a generator), else the centre crop."""
        c = int(self.config["crop_size"])
        n, (h, w) = img.shape[0], img.shape[-2:]
        if c >= min(h, w):
            return img, torch.zeros(n), torch.zeros(n)
        if generator is None:
            top, left = (h - c) // 2, (w - c) // 2
            return img[..., top:top + c, left:left + c], torch.full((n,), float(top)), torch.full((n,), float(left))
        tops = torch.randint(0, h - c + 1, (n,), generator=generator)
        lefts = torch.randint(0, w - c + 1, (n,), generator=generator)
        crop = gather_crops if img.is_cuda else slice_crops  # the same pixels; each faster on its device
        return crop(img, tops, lefts, c), tops.float(), lefts.float()

    # --------------------------------------------------------------- training
    def aux_targets(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Training-only labels (B, T, A) from the privileged rows: the named object's and receptacle's
        positions, then every row's [present, position]; positions times ``scale`` (metres -> decimetres)."""
        aux = self.config["image_aux"]
        raw = obs[aux["label_key"]].float().flatten(2)
        rows = raw.reshape(*raw.shape[:2], -1, int(aux["row_dim"]))  # (B, T, R, row_dim)
        pos = rows[..., aux["pos_dims"]] * float(aux["scale"])
        pair = torch.einsum("bqr,btrd->btqd", self._named_pair_weights(obs).to(raw.device), pos).flatten(2)
        dense = torch.cat([rows[..., :1], pos], dim=-1).flatten(2)
        return torch.cat([pair, dense], dim=-1)

    def _named_pair_weights(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """(B, 2, R): the label rows of the object and the receptacle each instruction names."""
        return named_row_weights(obs["instructions"], [str(n).lower() for n in self.config["image_aux"]["row_names"]], 2)

    def aux_loss_of(self, images: dict, obs: Mapping[str, Any]) -> torch.Tensor:
        aux = self.config["image_aux"]
        target = self.aux_targets(obs)
        loss = 0.0
        for k in self.image_keys:
            pred = images[k][1].float()
            n, u = self.aux_pair_dim, self.aux_uv_dim  # pred: [pair, (u, v) of the pointers, dense]; target: [pair, dense]
            loss = loss + F.mse_loss(pred[..., :n], target[..., :n]) + float(aux["dense_weight"]) * F.mse_loss(pred[..., n + u:], target[..., n:])
            if len(images[k]) > 2 and f"pixels:{k}" in obs:
                uv = pred[..., n: n + u].reshape(-1, POINTERS, 2)
                loss = loss + float(aux["pixel_weight"]) * self.pointer_pixel_loss(images[k][2], obs, k, uv)
        return loss / len(self.image_keys)

    def pointer_pixel_loss(self, maps: dict, obs: Mapping[str, Any], key: str, uv: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of each pointer's attention map against a Gaussian bump (sigma: one feature
        cell) at the named item's projected pixel, in the crop's coordinates. Items outside the crop,
        and absent rows, are left out. A dense signal: the map learns *where* before the read-out learns *what*."""
        log_att = maps["log_att"].float()                         # (N, Q, h, w), N = B * T; Q: object, receptacle, gripper
        n, q, h, w = log_att.shape
        px = obs[f"pixels:{key}"].float()                         # (B, T, R + 1, 2) col, row; last: the gripper
        wts = self._named_pair_weights(obs)
        wts = torch.cat([torch.cat([wts, torch.zeros(*wts.shape[:2], 1)], -1),
                         F.one_hot(torch.tensor([px.shape[2] - 1]), px.shape[2]).float().expand(wts.shape[0], 1, -1)], 1).to(px.device)
        named = torch.einsum("bqr,btrd->btqd", wts, px).reshape(n, q, 2)
        crop = float(maps["crop"])
        col = (named[..., 0] - maps["lefts"].to(px.device)[:, None]) / crop * 2 - 1   # [-1, 1] like SpatialSoftmax
        row = (named[..., 1] - maps["tops"].to(px.device)[:, None]) / crop * 2 - 1
        xs = torch.linspace(-1, 1, w, device=px.device)
        ys = torch.linspace(-1, 1, h, device=px.device)
        sigma = 2.0 / max(h - 1, 1)
        bump = torch.exp(-((ys.view(1, 1, h, 1) - row[..., None, None]) ** 2
                           + (xs.view(1, 1, 1, w) - col[..., None, None]) ** 2) / (2 * sigma ** 2))
        target = bump / bump.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        inside = ((col.abs() <= 1) & (row.abs() <= 1) & (wts.sum(-1) > 0).repeat_interleave(n // wts.shape[0], 0)).float()
        ce = -(target * log_att).sum(dim=(-2, -1))              # (N, Q)
        if uv is not None:  # DSNT: the expected coordinates themselves, in feature cells
            ce = ce + ((uv - torch.stack([col, row], -1)) ** 2).sum(-1) / sigma ** 2
        return (ce * inside).sum() / inside.sum().clamp_min(1.0)

    def encoder_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Auxiliary position loss of the (instruction-FiLM-ed) image encoder alone (train.encoder_pretrain_steps)."""
        if not self.aux:
            raise RealgapError("train.encoder_pretrain_steps: needs policy.image_encoder: film and image_aux.enabled: true")
        obs = self.to_tensors(batch)
        instr = self.instr_enc(obs["tokens"])
        return self.aux_loss_of(self.encode_images(obs, instr, generator), obs)

    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        obs = self.to_tensors(batch)
        act = batch["action"]
        act = act if isinstance(act, torch.Tensor) else torch.as_tensor(np.asarray(act))
        actions = self.normalizer.normalize("action", act.to(self.device).float())
        instr = self.instr_enc(obs["tokens"]) if self.config["use_instruction"] else None
        images = self.encode_images(obs, instr, generator)
        cond = self.encode(obs, generator, images)
        noise = torch.randn(actions.shape, generator=generator).to(self.device)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (actions.shape[0],), generator=generator)
        noisy = self.train_scheduler.add_noise(actions, noise, t.to(self.device))
        loss = F.mse_loss(self.denoiser(noisy, t.to(self.device), cond).float(), noise)
        label = self.config["image_aux"]["label_key"]
        if self.aux and label in obs and not any(k.startswith("cached:") for k in obs):
            loss = loss + float(self.config["image_aux"]["weight"]) * self.aux_loss_of(images, obs)
        return loss

    # --------------------------------------------------------------- sampling
    def ddim_table(self, num_steps: int) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per DDIM step (eta = 0): (t, sqrt(a_t), sqrt(1 - a_t), sqrt(a_prev), sqrt(1 - a_prev)), float32.

        The same numbers diffusers' DDIMScheduler computes inside every ``step`` (tested equal), computed
        once: its per-step bookkeeping cost about as much as a small denoiser pass.
        """
        key = (int(num_steps), str(self.device))
        cache = self.__dict__.setdefault("_ddim_cache", {})
        if key not in cache:
            n_train = int(self.config["num_train_timesteps"])
            acp = alphas_cumprod(n_train, self.config["beta_schedule"])
            stride = n_train // int(num_steps)  # diffusers' "leading" spacing, steps_offset 0
            rows = []
            for t in (np.arange(int(num_steps)) * stride)[::-1].tolist():
                a_t = acp[t]
                a_prev = acp[t - stride] if t - stride >= 0 else torch.tensor(1.0)  # set_alpha_to_one
                rows.append((int(t), *(v.to(self.device) for v in (a_t ** 0.5, (1 - a_t) ** 0.5, a_prev ** 0.5, (1 - a_prev) ** 0.5))))
            cache[key] = rows
        return cache[key]

    @staticmethod
    def ddim_step(x: torch.Tensor, eps: torch.Tensor, coefs) -> torch.Tensor:
        """One deterministic DDIM step with x0 clipped to [-1, 1] and eps re-derived from the clipped x0."""
        sa, sb, sa_prev, sb_prev = coefs
        x0 = ((x - sb * eps) / sa).clamp(-1.0, 1.0)
        eps = (x - sa * x0) / sb
        return sa_prev * x0 + sb_prev * eps

    def chunk_noise(self, sample_seed_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B*K, horizon, action_dim) initial noise, each chunk from its own seed."""
        shape, g = (self.horizon, self.action_dim), torch.Generator()  # re-seeded per chunk: same draws as a fresh one
        return torch.stack([torch.randn(shape, generator=g.manual_seed(int(s))) for row in sample_seed_lists for s in row])

    @torch.inference_mode()
    def sample_chunks(self, obs: Mapping[str, Any], num_samples: int = 1, seed: int | Sequence[int] | None = None,
                      sample_seed_lists: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """K action chunks per observation: (B, K, horizon, action_dim), unnormalized.

        The observation is encoded once and its condition repeated over the K samples; every DDIM step
        is ONE denoiser pass over all B*K chunks. Chunk k of observation b starts from noise seeded with
        ``sample_seeds(seed[b], K)[k]`` (or ``sample_seed_lists[b][k]``). With the U-Net (run through
        ``networks.UnetSampler``) a chunk is bit-identical whatever else shares the call (B, K); with the
        transformer it agrees to float32 rounding (~1e-5: batched attention kernels). tests/test_policy.py.
        """
        tensors = self.to_tensors(obs)
        b = len(obs["instruction"]) if "instruction" in obs else next(iter(tensors.values())).shape[0]
        k = int(num_samples)
        if sample_seed_lists is None:
            if seed is None:
                raise ValueError("sample_chunks needs seed or sample_seed_lists")
            seeds = [int(seed)] * b if np.isscalar(seed) else [int(s) for s in seed]
            if len(seeds) != b:
                raise ValueError(f"got {len(seeds)} seeds for {b} observations")
            sample_seed_lists = [sample_seeds(s, k) for s in seeds]
        x = self.chunk_noise(sample_seed_lists).to(self.device)
        if x.shape[0] != b * k:
            raise ValueError(f"sample_seed_lists must be {b} x {k}")
        table = self.ddim_table(int(self.config["num_inference_steps"]))
        with per_sample_kernels():
            # the condition is computed per observation (a fixed-size computation, so a slot's result does
            # not depend on what shares the call), once, then repeated over its K samples
            conds = [self.encode(_row(tensors, i)) for i in range(b)]
            unet = isinstance(self.denoiser, ConditionalUnet1D)
            if unet:  # FiLM scale/bias of every block for every step, once per call
                ts = torch.tensor([t for t, *_ in table], dtype=torch.long, device=x.device)
                per_obs = [self.denoiser.films(ts, c) for c in conds]  # b x blocks x (T, 1, 2C)
                films = [torch.cat([p[j] for p in per_obs], dim=1) for j in range(len(per_obs[0]))]
                films = [f.repeat_interleave(k, dim=1) if k > 1 else f for f in films]  # (T, B*K, 2C)
                sampler = self.denoiser.sampler()
            else:
                cond = torch.cat(conds).repeat_interleave(k, dim=0)
            for i, (t, *coefs) in enumerate(table):
                if unet:
                    eps = self.denoiser(x, None, None, films=[f[i] for f in films], sampler=sampler)
                else:
                    eps = self.denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), cond)
                x = self.ddim_step(x, eps, coefs)
        actions = self.normalizer.unnormalize("action", x)
        return actions.reshape(b, k, self.horizon, self.action_dim).float().cpu().numpy()


def slice_crops(img: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, c: int) -> torch.Tensor:
    """(N, C, c, c) crops at (tops, lefts): one slice per image, stacked (~2x faster than a gather on a CPU)."""
    return torch.stack([im[:, t:t + c, l:l + c] for im, t, l in zip(img, tops.tolist(), lefts.tolist())])


def gather_crops(img: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, c: int) -> torch.Tensor:
    """The same crops as ``slice_crops`` in one indexing op (on a GPU the slice loop launches a copy per image)."""
    span = torch.arange(c, device=img.device)
    rows = (tops.to(img.device)[:, None] + span)[:, None, :, None]   # (N, 1, c, 1)
    cols = (lefts.to(img.device)[:, None] + span)[:, None, None, :]  # (N, 1, 1, c)
    batch = torch.arange(img.shape[0], device=img.device)[:, None, None, None]
    chans = torch.arange(img.shape[1], device=img.device)[None, :, None, None]
    return img[batch, chans, rows, cols]


def _row(tensors: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {key: v[i:i + 1] for key, v in tensors.items()}


@contextmanager
def per_sample_kernels():
    """Route CPU convolutions to the per-sample kernel (no oneDNN / NNPACK): those switch algorithms
    with the batch size, which changed a chunk by ~1e-5 depending on what shared its call; they are
    also slower for these tiny tensors (oneDNN: ~300 us per conv of 8 x 32 x 16)."""
    mkldnn, nnpack = torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled()
    torch._C._set_mkldnn_enabled(False)
    torch._C._set_nnpack_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(mkldnn)
        torch._C._set_nnpack_enabled(nnpack)


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
        # one fused call over all tensors: a per-tensor loop costs ~150 kernel launches per step on a GPU
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.step += 1
