"""Network pieces of the diffusion policy: observation encoders and denoisers.

Denoisers map (noisy action chunk (B, H, A), diffusion step (B,), global condition (B, C)) to the
predicted noise (B, H, A). The default is diffusion_policy's 1D temporal conv U-Net with FiLM; a small
transformer is the alternative. Widths default far below the paper's, to train on a CPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------ activation
class _MishGrad(torch.autograd.Function):
    """torch's mish forward, with the gradient from vectorised elementwise ops (used in the FiLM conv blocks,
    where aten's CPU mish_backward was the largest single cost of an encoder training step)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.mish(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        t = torch.tanh(F.softplus(x))
        return grad * (t + x * torch.sigmoid(x) * (1 - t * t))  # d/dx x tanh(softplus x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """F.mish; under autograd, with the fast gradient (the forward values are F.mish's, bit for bit)."""
    return _MishGrad.apply(x) if torch.is_grad_enabled() and x.requires_grad else F.mish(x)


# ------------------------------------------------------------------ encoders
class StateEncoder(nn.Module):
    """MLP over the concatenated, normalized low-dim observation of one step."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, out_dim))

    def forward(self, x):
        return self.net(x)


class SpatialSoftmax(nn.Module):
    """Per-keypoint expected (x, y) image coordinates of a softmax over the feature map."""

    def __init__(self, in_channels: int, num_kp: int):
        super().__init__()
        self.kp = nn.Conv2d(in_channels, num_kp, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        att = F.softmax(self.kp(x).flatten(2), dim=-1)  # (B, K, H*W)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        ex = (att * grid_x.reshape(1, 1, -1)).sum(-1)
        ey = (att * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.cat([ex, ey], dim=-1)  # (B, 2K)


class ImageEncoder(nn.Module):
    """Small CNN (GroupNorm, no BatchNorm) + spatial softmax + linear. Input float (N, 3, h, w) in [0, 1]."""

    def __init__(self, out_dim: int, channels: Sequence[int] = (32, 64, 64), num_kp: int = 32, groups: int = 8):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=2 if i < 2 else 1, padding=1), nn.GroupNorm(groups, c), nn.Mish()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, num_kp)
        self.out = nn.Linear(2 * num_kp, out_dim)

    def forward(self, img):
        return self.out(self.pool(self.conv(img * 2.0 - 1.0)))


class InstructionEncoder(nn.Module):
    """Learned token embeddings, mean-pooled over the non-pad tokens (id 0 is padding)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens):
        mask = (tokens != 0).unsqueeze(-1).to(self.emb.weight.dtype)
        return (self.emb(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class PositionalInstructionEncoder(nn.Module):
    """Word + position embeddings, a per-token MLP, masked mean, linear: word order matters ("red block ...
    yellow rack" differs from "yellow block ... red rack"). The per-token nonlinearity is what makes it
    so: a mean of (word + position) sums is the same for both orders."""

    def __init__(self, vocab_size: int, dim: int, max_len: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.1)
        self.token_mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.Mish())
        self.out = nn.Linear(dim * 2, dim)

    def forward(self, tokens):
        mask = (tokens != 0).unsqueeze(-1).to(self.emb.weight.dtype)
        h = self.token_mlp(self.emb(tokens) + self.pos[: tokens.shape[1]]) * mask
        return self.out(h.sum(1) / mask.sum(1).clamp(min=1.0))


class FiLMImageEncoder(nn.Module):
    """CNN whose every block is modulated by the instruction (RT-1 / BC-Z style FiLM), GroupNorm,
    spatial softmax. ``forward(img, instr) -> (features (N, out_dim), aux (N, aux_dim))``.

    Because the instruction scales and shifts the feature maps, *which* item the spatial-softmax
    keypoints land on depends on the words. ``aux`` is a linear read-out of the keypoints, trained
    (optionally) to predict item positions; it is also an input of the policy (its "where is it").
    """

    def __init__(self, out_dim: int, instr_dim: int, channels: Sequence[int] = (32, 32, 64),
                 strides: Sequence[int] = (2, 1, 1), num_kp: int = 32, groups: int = 8, aux_dim: int = 0,
                 pointers: int = 0, pointer_dim: int = 3):
        super().__init__()
        self.convs, self.norms, self.films = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c_in = 3
        for c, s in zip(channels, strides):
            self.convs.append(nn.Conv2d(c_in, c, 3, stride=s, padding=1))
            self.norms.append(nn.GroupNorm(groups, c))
            film = nn.Linear(instr_dim, 2 * c)
            nn.init.zeros_(film.weight)  # starts as the identity modulation
            nn.init.zeros_(film.bias)
            self.films.append(film)
            c_in = c
        self.pool = SpatialSoftmax(c_in, num_kp)
        # pointers: instruction-queried attention maps for the named object, the named receptacle and the
        # gripper, read out as expected image coordinates (u, v) and attended features -> the named pair's
        # positions. aux = [pair positions (2 * pointer_dim), (u, v) of each pointer (2 * pointers), dense].
        self.pointer = InstructionPointer(c_in, instr_dim, pointers, pointer_dim) if pointers else None
        self.pointer_dim = pointer_dim
        n_in = 2 * num_kp + (self.pointer.feature_dim if pointers else 0)
        self.out = nn.Sequential(nn.Linear(n_in, out_dim), nn.Mish(), nn.Linear(out_dim, out_dim))
        n_dense = aux_dim - (2 * pointer_dim + 2 * pointers if pointers else 0)
        self.aux = nn.Sequential(nn.Linear(2 * num_kp, 128), nn.Mish(), nn.Linear(128, n_dense)) if aux_dim else None

    def forward(self, img, instr, with_maps: bool = False):
        """``with_maps`` (training): also the pointers' log-attention maps (N, Q, h, w), or None."""
        h = img * 2.0 - 1.0
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            gamma, beta = film(instr).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            h = mish(norm(conv(h)) * (1.0 + gamma) + beta)
        kp = self.pool(h)
        aux = self.aux(kp) if self.aux is not None else kp[:, :0]
        if self.pointer is None:
            return (self.out(kp), aux, None) if with_maps else (self.out(kp), aux)
        where, uv, feats, log_att = self.pointer(h, instr)
        # the pair's positions only: the gripper's is read out too (one batched read, bit-stable) but unused
        pair = where[:, : 2 * self.pointer_dim]
        feat, aux = self.out(torch.cat([kp, feats], dim=-1)), torch.cat([pair, uv, aux], dim=-1)
        return (feat, aux, log_att) if with_maps else (feat, aux)


class InstructionPointer(nn.Module):
    """Where is the item the instruction names: per query, an attention map over the feature map whose
    logits are the dot product of each pixel's features with a query computed from the instruction
    (CLIPort-style), its expected (u, v) and attended feature vector, and an MLP to the item's position.
    Trained through the position (DSNT-style), the map learns to peak on the named item."""

    def __init__(self, channels: int, instr_dim: int, n_queries: int, pos_dim: int, hidden: int = 64):
        super().__init__()
        self.n_queries, self.channels = n_queries, channels
        self.query = nn.Linear(instr_dim, n_queries * channels)
        self.key = nn.Conv2d(channels, channels, 1)
        self.read = nn.Sequential(nn.Linear(2 + channels, hidden), nn.Mish(), nn.Linear(hidden, pos_dim))
        self.feature_dim = n_queries * (2 + channels)

    def forward(self, h, instr):
        b, c, hh, ww = h.shape
        q = self.query(instr).reshape(b, self.n_queries, c)
        keys = self.key(h).flatten(2)                                   # (B, C, HW)
        log_att = F.log_softmax(torch.einsum("bqc,bcp->bqp", q, keys) / c ** 0.5, dim=-1)
        att = log_att.exp()
        ys = torch.linspace(-1, 1, hh, device=h.device, dtype=h.dtype)
        xs = torch.linspace(-1, 1, ww, device=h.device, dtype=h.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        uv = torch.stack([(att * grid_x.reshape(1, 1, -1)).sum(-1), (att * grid_y.reshape(1, 1, -1)).sum(-1)], -1)
        attended = torch.einsum("bqp,bcp->bqc", att, h.flatten(2))
        parts = torch.cat([uv, attended], dim=-1)                        # (B, Q, 2 + C)
        return self.read(parts).flatten(1), uv.flatten(1), parts.flatten(1), log_att.reshape(b, self.n_queries, hh, ww)


class RowAttention(nn.Module):
    """Instruction-queried attention over the rows of ``object_state`` (one row per catalogue item).

    Each row has a learned key (its identity); ``n_queries`` queries come from the instruction
    embedding, so the policy can pull out "the object named" and "the receptacle named" without
    having to learn that selection inside the denoiser. Output: the attended rows, (B, T, Q * row_dim).
    """

    def __init__(self, n_rows: int, row_dim: int, instr_dim: int, n_queries: int = 2, key_dim: int = 32):
        super().__init__()
        self.row_dim, self.n_queries, self.key_dim = row_dim, n_queries, key_dim
        self.row_key = nn.Parameter(torch.randn(n_rows, key_dim) * 0.1)
        self.query = nn.Linear(instr_dim, n_queries * key_dim)

    def forward(self, rows_flat, instr, weights=None):
        """``weights`` (B, Q, R), if given, replace the learned attention (grounded by name)."""
        b, t, _ = rows_flat.shape
        rows = rows_flat.reshape(b, t, -1, self.row_dim)
        if weights is None:
            q = self.query(instr).reshape(b, self.n_queries, self.key_dim)
            weights = torch.softmax(torch.einsum("bqk,rk->bqr", q, self.row_key) / math.sqrt(self.key_dim), dim=-1)
        return torch.einsum("bqr,btrd->btqd", weights.to(rows.dtype), rows).flatten(2)


def named_row_weights(instructions, row_names, n_queries: int) -> torch.Tensor:
    """(B, Q, R) one-hot weights: query q selects the q-th catalogue item named in the instruction
    (by first mention; uniform where fewer than q items are named). Grounds "the red block" in its row."""
    out = torch.full((len(instructions), n_queries, len(row_names)), 1.0 / len(row_names))
    for b, text in enumerate(instructions):
        padded = f" {' '.join(str(text).lower().split())} "
        hits = sorted((padded.find(f" {name} "), r) for r, name in enumerate(row_names) if f" {name} " in padded)
        for q, (_, r) in enumerate(hits[:n_queries]):
            out[b, q] = 0.0
            out[b, q, r] = 1.0
    return out


# ------------------------------------------------------------------ denoisers
class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
        x = t.float()[:, None] * freqs[None]
        return torch.cat([x.sin(), x.cos()], dim=-1)


def step_embedding(dim: int) -> nn.Module:
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))


def conv1d(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a Conv1d / ConvTranspose1d module; under ``torch.inference_mode`` (sampling) as one GEMM.

    The GEMM form (im2col, then a single matrix product over all samples and positions) costs about the
    same at 1 or 64 samples for these tiny tensors, where CPU conv kernels either loop over samples or
    (oneDNN) pay ~0.3 ms per call; and a row of a GEMM with >= 4 rows does not depend on the other rows,
    so a chunk's result does not depend on what shares its batch (tests/test_policy.py checks both).
    """
    if not torch.is_inference_mode_enabled() or not isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        return m(x)
    if isinstance(m, nn.ConvTranspose1d):  # = zero-insertion upsampling + a stride-1 conv with the flipped kernel
        (s,), (p,), (k,) = m.stride, m.padding, m.kernel_size
        n, c, length = x.shape
        up = x.new_zeros(n, c, (length - 1) * s + 1)
        up[..., ::s] = x
        weight = m.weight.flip(-1).transpose(0, 1)
        return _gemm_conv(up, weight, m.bias, 1, k - 1 - p)
    return _gemm_conv(x, m.weight, m.bias, m.stride[0], m.padding[0])


def _gemm_conv(x, weight, bias, stride: int, pad: int):
    n, c, _ = x.shape
    c_out, _, k = weight.shape
    if k == 1 and stride == 1 and pad == 0:
        cols = x.transpose(1, 2).reshape(-1, c)
    else:
        cols = F.pad(x, (pad, pad)).unfold(2, k, stride)  # (N, C, L_out, k)
        cols = cols.permute(0, 2, 1, 3).reshape(-1, c * k)
    cols = cols.contiguous()  # a strided view would take another GEMM variant (N = 1 gives a view here)
    rows = cols.shape[0]
    if rows < 4:  # tiny GEMMs take another kernel path; pad so every call takes the same one
        cols = torch.cat([cols, cols.new_zeros(4 - rows, cols.shape[1])])
    out = F.linear(cols, weight.reshape(c_out, c * k), bias)[:rows]
    return out.reshape(n, -1, c_out).transpose(1, 2)


class Conv1dBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())

    def forward(self, x):
        conv, norm, act = self.block
        return act(norm(conv1d(conv, x)))


class FiLMResBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias between them."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel, groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, cond, film=None):
        """``film``: this block's precomputed ``self.film(cond)`` (sampling reuses it across steps)."""
        h = self.block1(x)
        scale, bias = (self.film(cond) if film is None else film).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(scale * h + bias)
        return h + conv1d(self.skip, x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, cond_dim: int, down_dims: Sequence[int] = (64, 128, 256),
                 kernel_size: int = 5, n_groups: int = 8, step_embed_dim: int = 128):
        super().__init__()
        self.step_emb = step_embedding(step_embed_dim)
        cdim = cond_dim + step_embed_dim
        dims = [action_dim, *down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        blk = lambda i, o: FiLMResBlock(i, o, cdim, kernel_size, n_groups)  # noqa: E731
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([blk(c_in, c_out), blk(c_out, c_out),
                                            nn.Conv1d(c_out, c_out, 3, 2, 1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([blk(down_dims[-1], down_dims[-1]), blk(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(pairs[1:]):  # every up level undoes one down-sampling
            self.up.append(nn.ModuleList([blk(c_out * 2, c_in), blk(c_in, c_in), nn.ConvTranspose1d(c_in, c_in, 4, 2, 1)]))
        self.final = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))
        # every FiLM block in execution order (a plain list: the modules are registered above)
        self.film_blocks = [blk for level in self.down for blk in level[:2]] + list(self.mid) + \
                           [blk for level in self.up for blk in level[:2]]
        self.register_load_state_dict_post_hook(_drop_sampler_weights)

    def sampler(self) -> UnetSampler:
        """A UnetSampler for one sampling call. Its weight layouts are prepared once and reused by later calls
        until a parameter changes: in place (its version), moved (its data pointer) or replaced by
        ``load_state_dict(assign=True)`` (the post-load hook)."""
        cache = self.__dict__.get("_sampler_weights")
        if cache is None:
            cache = self.__dict__["_sampler_weights"] = {"params": list(self.parameters()), "key": None, "weights": {}}
        key = tuple((q.data_ptr(), q._version) for q in cache["params"])
        if key != cache["key"]:
            cache["key"], cache["weights"] = key, {}
        return UnetSampler(self, cache["weights"])

    def films(self, t, cond):
        """Per FiLM block, its (scale, bias) for every (step, condition) pair: (T, N, 2C).

        Sampling computes these once per call instead of once per denoising step."""
        s = self.step_emb(t)  # (T, D)
        c = torch.cat([s.unsqueeze(1).expand(-1, cond.shape[0], -1), cond.unsqueeze(0).expand(len(t), -1, -1)], dim=-1)
        return [blk.film(c) for blk in self.film_blocks]

    def forward(self, x, t, cond, films=None, sampler: UnetSampler | None = None):
        """``films``: precomputed per-block FiLM outputs for this step ((N, 2C) each); then t/cond are unused.
        ``sampler``: run the inference-only time-major path (``UnetSampler``) with those films."""
        if sampler is not None:
            return sampler(x, films)
        c = torch.cat([self.step_emb(t), cond], dim=-1) if films is None else None
        f = iter(films) if films is not None else None
        nxt = (lambda: next(f)) if f is not None else (lambda: None)  # noqa: E731
        h = x.transpose(1, 2)  # (B, A, H): convolve over time
        skips = []
        for b1, b2, down in self.down:
            h = b1(h, c, nxt())
            h = b2(h, c, nxt())
            skips.append(h)
            h = conv1d(down, h)
        for m in self.mid:
            h = m(h, c, nxt())
        for b1, b2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = b1(h, c, nxt())
            h = conv1d(up, b2(h, c, nxt()))
        block, out = self.final
        return conv1d(out, block(h)).transpose(1, 2)


def _drop_sampler_weights(module: nn.Module, _incompatible_keys) -> None:
    module.__dict__.pop("_sampler_weights", None)


class UnetSampler:
    """Inference-only forward of a ConditionalUnet1D for DDIM sampling (one instance per sampling call).

    Same function as the module path up to float32 rounding (~1e-6), built so that the work that grows with
    the number of chunks is mostly GEMM (about 2/3 of the extra time at K=8; README, sampling cost):
    - activations are time-major (N, T, C), the layout a conv-as-GEMM produces, so nothing is transposed;
      each lives in a zero-padded buffer (allocated on the first step, reused by the others) that the op
      producing it writes into, so im2col is one strided copy and no pad/cat copies are made;
    - GroupNorm runs on a channels-last view (no copy) with negated affine parameters, and Mish is
      rebuilt from one sigmoid: for z = -y, mish(y) = z - 2z / (1 + sigmoid(z)^2), since
      tanh(softplus(y)) = (1 - w) / (1 + w) with w = sigmoid(-y)^2. torch's own mish (exp, log1p, tanh)
      cost ~3x a GroupNorm at 8 chunks, the three cheap ops together less than one;
    - the stride-2 transposed conv is two phase convs (even / odd outputs) in one GEMM, whose output
      rows are already the upsampled sequence;
    - a chunk's result does not depend on the others in the call: every op is per sample or a GEMM row
      (with >= 4 rows, see ``_gemm_conv``); tests/test_policy.py checks bit-exactness across (B, K).
    """

    def __init__(self, unet: ConditionalUnet1D, weights: dict | None = None):
        """``weights``: prepared weight layouts to fill or reuse (``ConditionalUnet1D.sampler`` caches them)."""
        self.unet = unet
        self.pad = max(unet.final[0].block[0].kernel_size[0] // 2, 1)  # 1 for the stride-2 / transposed convs
        self.one = torch.ones((), dtype=unet.final[1].weight.dtype, device=unet.final[1].weight.device)
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {} if weights is None else weights
        self._bufs: dict[str, torch.Tensor] = {}

    # ---- prepared weights
    def _conv_weight(self, m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (k*C_in, C_out) tap-major, bias) for cols whose row is [x[t-p], ..., x[t+p]]."""
        if id(m) not in self._weights:
            w = m.weight.detach()
            if isinstance(m, nn.ConvTranspose1d):
                # (C_in, C_out, 4), stride 2, padding 1: out[2i] = x[i] W1 + x[i-1] W3, out[2i+1] = x[i+1] W0 + x[i] W2;
                # over the window [x[i-1], x[i], x[i+1]] the even and odd outputs are two halves of one GEMM
                if m.kernel_size != (4,) or m.stride != (2,) or m.padding != (1,) or m.output_padding != (0,):
                    raise NotImplementedError("UnetSampler: only ConvTranspose1d(c, c, 4, 2, 1)")
                z = torch.zeros_like(w[:, :, 0])
                even = torch.cat([w[:, :, 3], w[:, :, 1], z])
                odd = torch.cat([z, w[:, :, 2], w[:, :, 0]])
                self._weights[id(m)] = (torch.cat([even, odd], dim=1).contiguous(), torch.cat([m.bias, m.bias]).detach())
            else:
                c_out, c_in, k = w.shape
                self._weights[id(m)] = (w.permute(2, 1, 0).reshape(k * c_in, c_out).contiguous(), m.bias.detach())
        return self._weights[id(m)]

    def _norm_weight(self, gn: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        if id(gn) not in self._weights:
            self._weights[id(gn)] = (-gn.weight.detach(), -gn.bias.detach())
        return self._weights[id(gn)]

    # ---- buffers: (N, T + 2 pad, C), the pad rows stay zero
    def _buf(self, name: str, n: int, t: int, c: int) -> torch.Tensor:
        b = self._bufs.get(name)
        if b is None or b.shape != (n, t + 2 * self.pad, c):
            b = self._bufs[name] = self.one.new_zeros(n, t + 2 * self.pad, c)
        return b

    def _inner(self, b: torch.Tensor) -> torch.Tensor:
        return b[:, self.pad: b.shape[1] - self.pad]

    # ---- ops
    @staticmethod
    def _mm(bias: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rows = a.shape[0]
        if rows < 4:  # tiny GEMMs take another kernel path (see _gemm_conv)
            return torch.addmm(bias, torch.cat([a, a.new_zeros(4 - rows, a.shape[1])]), w)[:rows]
        return torch.addmm(bias, a, w)

    def _conv(self, m: nn.Module, b: torch.Tensor, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Conv over the padded buffer ``b``: (output (N*T_out, C_out), cols, T_out)."""
        transposed = isinstance(m, nn.ConvTranspose1d)
        k = 3 if transposed else m.kernel_size[0]
        p = 1 if transposed else m.padding[0]
        n, tp, c = b.shape
        t_out = (tp - 2 * self.pad + 2 * p - k) // stride + 1
        cols = b.as_strided((n, t_out, k, c), (tp * c, stride * c, c, 1), b.storage_offset() + (self.pad - p) * c)
        cols = cols.reshape(n * t_out, k * c)  # the one copy: overlapping windows
        w, bias = self._conv_weight(m)
        return self._mm(bias, cols, w), cols, t_out

    def _norm_mish(self, y: torch.Tensor, gn: nn.GroupNorm, n: int, t: int) -> torch.Tensor:
        """mish(GroupNorm(y)) for y (N*T, C) time-major -> (N, T, C)."""
        w, b = self._norm_weight(gn)
        z = F.group_norm(y.view(n, t, -1).permute(0, 2, 1).unsqueeze(2), gn.num_groups, w, b, gn.eps)  # = -GN(y)
        z = z.squeeze(2).permute(0, 2, 1)
        s = torch.sigmoid(z)
        return torch.addcdiv(z, z, torch.addcmul(self.one, s, s, out=s), value=-2.0)

    def _res_block(self, blk: FiLMResBlock, name: str, b_in: torch.Tensor, film: torch.Tensor, out: torch.Tensor):
        """FiLMResBlock from the padded buffer ``b_in``; writes its output into ``out`` (a buffer's inside)."""
        (conv1, gn1, _), (conv2, gn2, _) = blk.block1.block, blk.block2.block
        n, c_in = b_in.shape[0], b_in.shape[2]
        y, cols, t = self._conv(conv1, b_in)
        h = self._norm_mish(y, gn1, n, t)
        c = h.shape[2]
        mid = self._buf(name, n, t, c)
        torch.addcmul(film[:, None, c:], film[:, None, :c], h, out=self._inner(mid))  # FiLM: scale * h + bias
        y, _, _ = self._conv(conv2, mid)
        h = self._norm_mish(y, gn2, n, t)
        if isinstance(blk.skip, nn.Identity):
            skip = self._inner(b_in)
        else:  # the 1x1 skip conv reads the centre tap of conv1's cols (a strided view, no copy)
            k = conv1.kernel_size[0]
            w, bias = self._conv_weight(blk.skip)
            skip = self._mm(bias, cols.view(n * t, k, c_in)[:, k // 2], w).view(n, t, c)
        torch.add(h, skip, out=out)

    def __call__(self, x: torch.Tensor, films: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: noisy chunks (N, H, A); films: this step's per-block FiLM outputs ((N, 2C) each) -> eps (N, H, A)."""
        u, f = self.unet, iter(films)
        n, t, a = x.shape
        b = self._buf("in", n, t, a)
        self._inner(b).copy_(x)
        skips = []
        for i, (b1, b2, down) in enumerate(u.down):
            c = b1.block1.block[0].out_channels
            o1, o2 = self._buf(f"down{i}.1", n, t, c), self._buf(f"down{i}.2", n, t, c)
            self._res_block(b1, f"down{i}.1.mid", b, next(f), self._inner(o1))
            self._res_block(b2, f"down{i}.2.mid", o1, next(f), self._inner(o2))
            skips.append(o2)
            b = o2
            if not isinstance(down, nn.Identity):
                y, _, t = self._conv(down, o2, stride=2)
                b = self._buf(f"down{i}.out", n, t, c)
                self._inner(b).copy_(y.view(n, t, c))
        for j, m in enumerate(u.mid):
            c = m.block1.block[0].out_channels
            if j == len(u.mid) - 1 and len(u.up):  # written straight into the first half of the up level's concat
                o = self._buf("up0.in", n, t, c + skips[-1].shape[2])
                self._res_block(m, f"mid{j}.mid", b, next(f), self._inner(o)[..., :c])
            else:
                o = self._buf(f"mid{j}", n, t, c)
                self._res_block(m, f"mid{j}.mid", b, next(f), self._inner(o))
            b = o
        for i, (b1, b2, up) in enumerate(u.up):
            skip = skips.pop()
            self._inner(b)[..., b.shape[2] - skip.shape[2]:].copy_(self._inner(skip))  # torch.cat([h, skip], channels)
            c = b1.block1.block[0].out_channels
            o1, o2 = self._buf(f"up{i}.1", n, t, c), self._buf(f"up{i}.2", n, t, c)
            self._res_block(b1, f"up{i}.1.mid", b, next(f), self._inner(o1))
            self._res_block(b2, f"up{i}.2.mid", o1, next(f), self._inner(o2))
            y, _, t = self._conv(up, o2)  # (N*T, 2C): even and odd outputs = (N, 2T, C)
            t *= 2
            extra = skips[-1].shape[2] if i + 1 < len(u.up) else 0
            b = self._buf(f"up{i + 1}.in" if extra else "final.in", n, t, c + extra)
            self._inner(b)[..., :c].copy_(y.view(n, t, c))
        block, out = u.final
        y, _, t = self._conv(block.block[0], b)
        h = self._norm_mish(y, block.block[1], n, t)
        w, bias = self._conv_weight(out)
        return self._mm(bias, h.reshape(n * t, -1), w).view(n, t, -1)


class TransformerDenoiser(nn.Module):
    """A small encoder-only transformer over [condition token, action tokens]."""

    def __init__(self, action_dim: int, cond_dim: int, horizon: int, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, step_embed_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.step_emb = step_embedding(step_embed_dim)
        self.cond_in = nn.Linear(cond_dim + step_embed_dim, d_model)
        self.act_in = nn.Linear(action_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, horizon + 1, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, action_dim)

    def forward(self, x, t, cond):
        c = self.cond_in(torch.cat([self.step_emb(t), cond], dim=-1)).unsqueeze(1)
        h = torch.cat([c, self.act_in(x)], dim=1) + self.pos[:, : x.shape[1] + 1]
        return self.out(self.norm(self.body(h)[:, 1:]))
