"""Per-dimension min-max normalization to [-1, 1] (DDPM clips samples to that box).

Statistics come from the training split only and are saved with the checkpoint as JSON.

A dimension that carries no signal is only shifted to centre on 0 (scale 1, a pass-through), never
stretched: its span is below ``eps`` (constant), or its standard deviation is within ``noise_k``
(3) times the known observation noise ``noise_std`` (pure sensor noise has a std of exactly that).
Min-max scaling such a dimension would divide by a span of a few noise sigma and blow any value it
takes later up ~100x (a held-out item's row, never present in training, reached the policy as 130).

Presence rows (``rows={key: width}``, rows ``[present, ...]`` as in realgap's ``object_state``): a row
that was never present in training (a held-out item) has no statistics of its own. While it is
absent it reads exactly as in training (its zeros pass through); once present it is normalised with
the statistics pooled per column over the seen rows of the same kind (``row_kinds={key: [kind per
row]}``, e.g. object / receptacle; ``unseen_scale``/``unseen_offset``), so a held-out vial's position
reaches the policy on the same scale as a trained vial's and a held-out cup's as a trained rack's.
Pooling across kinds would read a receptacle like an object (its constant z=0 stretched to -1).
Without ``row_kinds`` all rows are one kind.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from realgap.errors import RealgapError


class Normalizer:
    def __init__(self, stats: Mapping[str, Mapping[str, np.ndarray]] | None = None):
        # stats[key] = {"scale": ..., "offset": ...}: x_norm = x * scale + offset
        self.stats = {k: {n: np.asarray(v, np.float32) for n, v in s.items()} for k, s in (stats or {}).items()}

    @classmethod
    def fit(cls, arrays: Mapping[str, np.ndarray], eps: float = 1e-4,
            noise_std: float | Mapping[str, float] = 0.0, noise_k: float = 3.0,
            rows: Mapping[str, int] | None = None,
            row_kinds: Mapping[str, Sequence[str]] | None = None) -> "Normalizer":
        """``noise_std``: the observation noise std the data was recorded with (one value, or per key).
        ``rows``: keys laid out as presence rows -> row width; ``row_kinds``: per such key, the kind of
        each row; a never-seen row pools the seen rows of its kind (see the module docstring)."""
        stats = {}
        for key, x in arrays.items():
            x = np.asarray(x, np.float64).reshape(len(x), -1)
            if len(x) == 0:
                raise RealgapError(f"normalizer: no samples for '{key}'")
            if not np.all(np.isfinite(x)):
                raise RealgapError(f"normalizer: '{key}' contains NaN or inf")
            sigma = float(noise_std.get(key, 0.0) if isinstance(noise_std, Mapping) else noise_std)
            lo, hi = x.min(0), x.max(0)
            span = hi - lo
            wide = (span > eps) & (x.std(0) > noise_k * sigma)
            scale = np.where(wide, 2.0 / np.where(wide, span, 1.0), 1.0)
            # wide dims: lo -> -1, hi -> +1; narrow dims: centred on 0 without scaling
            offset = np.where(wide, -1.0 - lo * scale, -(lo + hi) / 2.0)
            stats[key] = {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)}
            width = int((rows or {}).get(key, 0))
            if width and x.shape[1] % width == 0:
                kinds = list((row_kinds or {}).get(key) or [""] * (x.shape[1] // width))
                if len(kinds) != x.shape[1] // width:
                    raise RealgapError(f"normalizer: row_kinds.{key} names {len(kinds)} rows, "
                                       f"'{key}' has {x.shape[1] // width} rows of width {width}")
                stats[key] |= _unseen_row_stats(lo, hi, wide, width, kinds)
        return cls(stats)

    def __contains__(self, key: str) -> bool:
        return key in self.stats

    def normalize(self, key: str, x):
        s = self.stats[key]
        out = x * _like(s["scale"], x) + _like(s["offset"], x)
        if "row_dim" not in s:
            return out
        width = int(s["row_dim"][0])
        unseen = (s["unseen_scale"] != 0).reshape(-1, width)[:, :1]  # (rows, 1); 0 marks a seen row
        alt = x * _like(s["unseen_scale"], x) + _like(s["unseen_offset"], x)
        rows = lambda a: a.reshape(*a.shape[:-1], -1, width)  # noqa: E731
        present = rows(x)[..., :1] > 0.5
        if _is_torch(x):
            use, where = present & _torch().as_tensor(unseen, device=x.device), _torch().where
        else:
            use, where = present & unseen, np.where
        return where(use, rows(alt), rows(out)).reshape(out.shape)

    def unnormalize(self, key: str, x):
        s = self.stats[key]
        return (x - _like(s["offset"], x)) / _like(s["scale"], x)

    def to_dict(self) -> dict[str, Any]:
        return {k: {n: v.tolist() for n, v in s.items()} for k, s in self.stats.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "normalizer") -> "Normalizer":
        for k, s in d.items():
            extra = {"row_dim", "unseen_scale", "unseen_offset"}
            if (not isinstance(s, Mapping) or not {"scale", "offset"} <= set(s) <= {"scale", "offset"} | extra
                    or set(s) & extra not in (set(), extra) or len(s["scale"]) != len(s["offset"])):
                raise RealgapError(f"{where}.{k}: expected equal-length 'scale' and 'offset' lists")
        return cls(d)


def _unseen_row_stats(lo, hi, wide, width: int, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-column stats for rows that never varied, pooled over the rows of the same kind that did
    (0 for seen rows)."""
    lo, hi, wide = lo.reshape(-1, width), hi.reshape(-1, width), wide.reshape(-1, width)
    kinds = np.asarray([str(k) for k in kinds])
    scale, offset = np.zeros(lo.shape), np.zeros(lo.shape)
    for kind in dict.fromkeys(kinds):
        same = kinds == kind
        unseen = same & ~wide.any(1)
        if not unseen.any():
            continue
        for c in range(width):
            seen, known = same & wide[:, c], same & wide.any(1)
            if seen.any():
                plo, phi = lo[seen, c].min(), hi[seen, c].max()
                scale[unseen, c] = 2.0 / (phi - plo)
                offset[unseen, c] = -1.0 - plo * scale[unseen, c]
            elif known.any():  # constant on the seen rows of this kind: centred like them
                scale[unseen, c] = 1.0
                offset[unseen, c] = -(lo[known, c].min() + hi[known, c].max()) / 2.0
            else:  # no row of this kind was ever seen: pass through
                scale[unseen, c], offset[unseen, c] = 1.0, 0.0
    return {"row_dim": np.array([width], np.float32), "unseen_scale": scale.reshape(-1).astype(np.float32),
            "unseen_offset": offset.reshape(-1).astype(np.float32)}


def _torch():
    import torch

    return torch


def _is_torch(x) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, torch.Tensor)


def _like(v: np.ndarray, x):
    # broadcast over leading dims; works for numpy arrays and torch tensors
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch.as_tensor(v, dtype=x.dtype, device=x.device)
    except ImportError:  # pragma: no cover
        pass
    return v.astype(x.dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)
