"""Fixed-length windows over concatenated episodes, padded at the edges (diffusion_policy style).

A window is ``horizon`` consecutive steps of one episode. Windows may start up to ``pad_before``
steps before the episode and end up to ``pad_after`` steps after it; the missing steps repeat the
first / last frame. With pad_before = n_obs_steps-1 and pad_after = n_action_steps-1, every real step
is the "current" observation of some window and the policy learns to stop at the end.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from realgap.errors import RealgapError
from realgap.seeding import stream


def check_episode_ends(ends: np.ndarray, where: str = "meta/episode_ends") -> np.ndarray:
    ends = np.asarray(ends, np.int64)
    if ends.ndim != 1 or len(ends) == 0:
        raise RealgapError(f"{where}: no episodes")
    if ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise RealgapError(f"{where}: not strictly increasing")
    return ends


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/val split by episode; at least one training episode, val may be empty."""
    if not 0.0 <= val_ratio < 1.0:
        raise RealgapError(f"data.val_ratio: must be in [0, 1), got {val_ratio}")
    order = stream(seed, "val_split").permutation(n_episodes)
    n_val = min(int(round(n_episodes * val_ratio)), n_episodes - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class SequenceSampler:
    """Index windows of ``horizon`` steps over the chosen episodes."""

    def __init__(self, episode_ends: np.ndarray, episodes: Sequence[int], horizon: int,
                 pad_before: int = 0, pad_after: int = 0):
        ends = check_episode_ends(episode_ends)
        starts = np.concatenate([[0], ends[:-1]])
        self.horizon = int(horizon)
        win_ep, win_t0 = [], []
        for e in episodes:
            length = int(ends[e] - starts[e])
            first, last = -pad_before, length - horizon + pad_after
            t0 = np.arange(first, max(first, last) + 1)  # always >= 1 window, even for short episodes
            win_ep.append(np.full(len(t0), e))
            win_t0.append(t0)
        self.episode = np.concatenate(win_ep).astype(np.int64) if win_ep else np.zeros(0, np.int64)
        self.t0 = np.concatenate(win_t0).astype(np.int64) if win_t0 else np.zeros(0, np.int64)
        self._start = starts
        self._length = ends - starts

    def __len__(self) -> int:
        return len(self.episode)

    def indices(self, windows: np.ndarray) -> np.ndarray:
        """(len(windows), horizon) absolute step indices, edge frames repeated."""
        ep = self.episode[windows]
        t = self.t0[windows, None] + np.arange(self.horizon)[None]
        t = np.clip(t, 0, self._length[ep][:, None] - 1)
        return t + self._start[ep][:, None]

    def gather(self, arrays: Mapping[str, np.ndarray], windows: np.ndarray) -> dict[str, np.ndarray]:
        idx = self.indices(np.asarray(windows))
        return {k: v[idx] for k, v in arrays.items()}
