"""Demonstrations in memory for training: validated arrays, split, normalizer, instruction tokens.

Reads a ReplayBuffer once (demos are small: a few hundred episodes), so sampling a batch is a numpy
gather rather than a zarr read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from realgap.data.normalizer import Normalizer
from realgap.data.replay_buffer import ReplayBuffer
from realgap.data.sampler import SequenceSampler, check_episode_ends, split_episodes
from realgap.data.tokenizer import WordTokenizer, catalogue_words
from realgap.errors import RealgapError


class DemoDataset:
    def __init__(self, path: str | Path, obs_keys: Sequence[str], horizon: int, n_obs_steps: int,
                 n_action_steps: int, val_ratio: float = 0.05, seed: int = 0, max_episodes: int | None = None,
                 tokenizer: WordTokenizer | None = None, presence_rows: dict[str, int] | None = None,
                 row_kinds: dict[str, list[str]] | None = None):
        """``presence_rows``: obs keys laid out as rows ``[present, ...]`` -> width; ``row_kinds``: the
        kind of each such row (see ``Normalizer.fit``)."""
        path = Path(path)
        if not path.exists():
            raise RealgapError(f"data.path: {path} does not exist (run `realgap collect` first)")
        buf = ReplayBuffer.open(path, mode="r")
        n = buf.n_episodes if max_episodes is None else min(buf.n_episodes, int(max_episodes))
        if n == 0:
            raise RealgapError(f"{path}: dataset is empty (0 episodes)")
        ends = check_episode_ends(np.asarray(buf.root["meta/episode_ends"][:n]), f"{path}: meta/episode_ends")
        needed = list(obs_keys) + ["action"]
        missing = [k for k in needed if k not in buf.keys]
        if missing:
            raise RealgapError(f"{path}: missing data/{missing[0]} (has {', '.join(buf.keys)})")
        total = int(ends[-1])
        self.arrays = {k: np.asarray(buf.root["data"][k][:total]) for k in needed}
        for k, v in self.arrays.items():
            if v.dtype != np.uint8:
                self.arrays[k] = v.astype(np.float32)
                if not np.all(np.isfinite(self.arrays[k])):
                    raise RealgapError(f"{path}: data/{k} contains NaN or inf")
        infos = buf.episode_infos()[:n]
        self.episode_infos = infos
        self.instructions = [str(i.get("instruction", "")) for i in infos]
        self.tokenizer = tokenizer or WordTokenizer.from_texts(self.instructions, extra_words=catalogue_words())
        self.episode_tokens = self.tokenizer.encode(self.instructions)
        self.episode_ends = ends
        self.obs_keys = list(obs_keys)
        self.train_episodes, self.val_episodes = split_episodes(n, val_ratio, seed)
        kw = dict(horizon=horizon, pad_before=n_obs_steps - 1, pad_after=n_action_steps - 1)
        self.train = SequenceSampler(ends, self.train_episodes, **kw)
        self.val = SequenceSampler(ends, self.val_episodes, **kw) if len(self.val_episodes) else None
        self.n_obs_steps = n_obs_steps
        # statistics from the training split only (images are scaled in the encoder instead)
        train_steps = self.train_steps()
        # observation keys carry the sensor noise the demos were recorded with: noise-only dims stay unscaled
        noise = recorded_obs_noise(infos)
        self.normalizer = Normalizer.fit({k: v[train_steps] for k, v in self.arrays.items() if v.dtype != np.uint8},
                                         noise_std={k: noise for k in self.obs_keys}, rows=presence_rows,
                                         row_kinds=row_kinds)

    def add_pixel_labels(self, image_key: str, label_key: str, row_dim: int, pos_dims: Sequence[int],
                         ee: tuple[str, Sequence[int]] | None = None) -> str:
        """Privileged *training* labels: where each ``label_key`` row's position (and, with ``ee`` = (key,
        dims), the end effector's) falls in ``image_key``'s frames (col, row in pixels), projected with the
        camera pose each episode was recorded with. Stored as ``pixels:<image_key>`` (N, R [+ 1], 2) and
        gathered like an observation key."""
        from realgap.envs.scene import camera_pose, project_to_image

        camera, size = image_key.removeprefix("image_"), int(self.arrays[image_key].shape[1])
        rows = self.arrays[label_key].reshape(len(self.arrays[label_key]), -1, int(row_dim))
        pos = rows[..., list(pos_dims)]
        if ee is not None:
            pos = np.concatenate([pos, self.arrays[ee[0]][:, None, list(ee[1])]], axis=1)
        out = np.zeros((*pos.shape[:2], 2), np.float32)
        for e, (a, b) in enumerate(_bounds(self.episode_ends, np.arange(len(self.episode_ends)))):
            try:
                cam = camera_pose(camera, self.episode_infos[e].get("dr_params"))
            except KeyError:
                raise RealgapError(f"{image_key}: no camera named '{camera}' in the scene") from None
            out[a:b] = project_to_image(pos[a:b], cam["pos"], cam["quat"], cam["fovy"], size)
        key = f"pixels:{image_key}"
        self.arrays[key] = out
        self.obs_keys.append(key)
        return key

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.arrays.items()}

    def batch(self, sampler: SequenceSampler, windows: np.ndarray) -> dict:
        """Raw (unnormalized) batch: obs keys (B, To, ...), action (B, H, A), instruction (B strings).

        Only the first ``n_obs_steps`` frames of a window are gathered for observation keys (images
        dominate the cost). Arrays moved to a device (``to_device``) are gathered there.
        """
        idx = sampler.indices(np.asarray(windows))
        out = {k: _take(self.arrays[k], idx[:, : self.n_obs_steps]) for k in self.obs_keys}
        out["action"] = _take(self.arrays["action"], idx)
        out["instruction"] = [self.instructions[e] for e in sampler.episode[windows]]
        return out

    def frames(self, steps: np.ndarray, keys: Sequence[str] | None = None) -> dict:
        """Single frames as a batch with To = 1 (absolute step indices), for encoder-only training."""
        steps = np.asarray(steps, np.int64)
        out = {k: _take(self.arrays[k], steps[:, None]) for k in (keys or self.obs_keys)}
        out["instruction"] = [self.instructions[e] for e in self.episode_of(steps)]
        return out

    def episode_of(self, steps: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.episode_ends, np.asarray(steps), side="right")

    def train_steps(self) -> np.ndarray:
        """Absolute step indices of the training episodes."""
        return np.concatenate([np.arange(a, b) for a, b in _bounds(self.episode_ends, self.train_episodes)])

    def to_device(self, device) -> None:
        """Hold every array as a tensor on ``device`` (the dataset is small), so batches never leave it."""
        import torch

        for k, v in self.arrays.items():
            t = torch.from_numpy(np.ascontiguousarray(v))
            self.arrays[k] = t.to(device) if str(device) != "cpu" else t


def _take(array, idx: np.ndarray):
    if isinstance(array, np.ndarray):
        return array[idx]
    import torch

    return array[torch.as_tensor(idx, device=array.device)]


def recorded_obs_noise(infos) -> float:
    """The largest observation-noise std in the episodes' ``dr_params`` (0 when none was recorded)."""
    stds = [((i.get("dr_params") or {}).get("sensing") or {}).get("obs_noise_std", 0.0) for i in infos]
    return float(max([0.0, *[s for s in stds if isinstance(s, (int, float))]]))


def _bounds(ends: np.ndarray, episodes: np.ndarray):
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(starts[e]), int(ends[e])) for e in episodes]
