"""Sensing/actuation axis: observation noise, action noise and action latency.

``make_channel`` builds the per-episode channel. Sub-streams of the axis stream keep the parts
apart: ``(seed, "sensing", 0)`` observation noise, ``1`` action noise, ``2`` the episode's latency.
Noise is drawn every step even when its std is 0, so the draws never depend on the scale.
Latency ``N`` means the env executes the action the policy sent ``N`` control steps ago; during the
first ``N`` steps it executes ``hold`` (zeros: no motion, gripper command 0).

Presence rows: an observation key the env declares in ``SceneInfo.presence_rows`` (``{key: width}``,
realgap's ``object_state`` is ``{"object_state": 6}``) holds rows ``[present, ...]``. A real tracker
either sees an item or not: the 0/1 flag gets no noise, and neither does any value of an absent
(flag 0) row, which stays exactly zero. Only the other columns of present rows are noisy. Noise is
still drawn for every float, so the stream never depends on which items are present.
"""

from __future__ import annotations

import re
from collections import deque

import numpy as np

from realgap.seeding import stream

NAME = "sensing"
FIELDS = ()
PARAMS = {
    "obs_keys": ("regex", "proprio|object_state"),  # dict observation keys that get noise (float arrays only)
    "obs_noise_std": ("std", 0.0),
    "action_noise_std": ("std", 0.0),  # in normalized action units
    "latency_steps": ("steps", [0, 0]),
}


class SensingChannel:
    """Per-episode noise and delay between the simulator and the policy."""

    def __init__(self, seed: int, cfg: dict | None, low=-1.0, high=1.0, presence_rows: dict[str, int] | None = None):
        cfg = cfg or {"obs_keys": "$^", "obs_noise_std": 0.0, "action_noise_std": 0.0, "latency_steps": [0, 0]}
        self.obs_rng, self.act_rng = stream(seed, NAME, 0), stream(seed, NAME, 1)
        lo, hi = cfg["latency_steps"]
        self.latency = int(lo + min(int(stream(seed, NAME, 2).random() * (hi - lo + 1)), hi - lo))
        self.obs_std, self.act_std = float(cfg["obs_noise_std"]), float(cfg["action_noise_std"])
        self.obs_keys = re.compile(cfg["obs_keys"])
        self.low, self.high = low, high
        self.presence_rows = dict(presence_rows or {})
        self.queue: deque = deque()

    @property
    def params(self) -> dict:
        return {"latency_steps": self.latency, "obs_noise_std": self.obs_std, "action_noise_std": self.act_std}

    def _noisy(self, x, row_width: int | None = None):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            return x
        noise = self.obs_std * self.obs_rng.standard_normal(x.shape)
        if row_width:  # rows [present, ...]: noise only off the flag column of present rows
            if x.size % row_width:
                raise ValueError(f"presence rows of width {row_width} do not tile an observation of {x.size} values")
            rows = x.reshape(-1, row_width)
            mask = np.zeros(rows.shape)
            mask[:, 1:] = (rows[:, :1] > 0.5)
            noise = noise * mask.reshape(x.shape)
        return (x + noise).astype(x.dtype)

    def observe(self, obs):
        if isinstance(obs, dict):
            return {k: self._noisy(v, self.presence_rows.get(k)) if self.obs_keys.fullmatch(k) else v
                    for k, v in obs.items()}
        return self._noisy(obs)

    def act(self, action):
        action = np.asarray(action)
        noise = self.act_std * self.act_rng.standard_normal(action.shape)
        self.queue.append(np.clip(action + noise, self.low, self.high).astype(action.dtype))
        if len(self.queue) <= self.latency:
            return np.clip(np.zeros_like(action), self.low, self.high).astype(action.dtype)  # hold
        return self.queue.popleft()
