"""Per-dimension min-max normalization to [-1, 1] (DDPM clips samples to that box).

Statistics come from the training split only and are saved with the checkpoint as JSON. A dimension
whose range is below ``eps`` is only shifted (scale 1), so constant inputs don't blow up.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from realgap.errors import RealgapError


class Normalizer:
    def __init__(self, stats: Mapping[str, Mapping[str, np.ndarray]] | None = None):
        # stats[key] = {"scale": ..., "offset": ...}: x_norm = x * scale + offset
        self.stats = {k: {n: np.asarray(v, np.float32) for n, v in s.items()} for k, s in (stats or {}).items()}

    @classmethod
    def fit(cls, arrays: Mapping[str, np.ndarray], eps: float = 1e-4) -> "Normalizer":
        stats = {}
        for key, x in arrays.items():
            x = np.asarray(x, np.float64).reshape(len(x), -1)
            if len(x) == 0:
                raise RealgapError(f"normalizer: no samples for '{key}'")
            if not np.all(np.isfinite(x)):
                raise RealgapError(f"normalizer: '{key}' contains NaN or inf")
            lo, hi = x.min(0), x.max(0)
            span = hi - lo
            wide = span > eps
            scale = np.where(wide, 2.0 / np.where(wide, span, 1.0), 1.0)
            # wide dims: lo -> -1, hi -> +1; narrow dims: centred on 0 without scaling
            offset = np.where(wide, -1.0 - lo * scale, -(lo + hi) / 2.0)
            stats[key] = {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)}
        return cls(stats)

    def __contains__(self, key: str) -> bool:
        return key in self.stats

    def normalize(self, key: str, x):
        s = self.stats[key]
        return x * _like(s["scale"], x) + _like(s["offset"], x)

    def unnormalize(self, key: str, x):
        s = self.stats[key]
        return (x - _like(s["offset"], x)) / _like(s["scale"], x)

    def to_dict(self) -> dict[str, Any]:
        return {k: {n: v.tolist() for n, v in s.items()} for k, s in self.stats.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "normalizer") -> "Normalizer":
        for k, s in d.items():
            if not isinstance(s, Mapping) or set(s) != {"scale", "offset"} or len(s["scale"]) != len(s["offset"]):
                raise RealgapError(f"{where}.{k}: expected equal-length 'scale' and 'offset' lists")
        return cls(d)


def _like(v: np.ndarray, x):
    # broadcast over leading dims; works for numpy arrays and torch tensors
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch.as_tensor(v, dtype=x.dtype, device=x.device)
    except ImportError:  # pragma: no cover
        pass
    return v.astype(x.dtype if np.issubdtype(np.asarray(x).dtype, np.floating) else np.float32)
