"""Sensing/actuation axis: observation noise, action noise and action latency.

``make_channel`` builds the per-episode channel. Sub-streams of the axis stream keep the parts
apart: ``(seed, "sensing", 0)`` observation noise, ``1`` action noise, ``2`` the episode's latency.
Noise is drawn every step even when its std is 0, so the draws never depend on the scale.
Latency ``N`` means the env executes the action the policy sent ``N`` control steps ago; during the
first ``N`` steps it executes ``hold`` (zeros: no motion, gripper command 0).
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

    def __init__(self, seed: int, cfg: dict | None, low=-1.0, high=1.0):
        cfg = cfg or {"obs_keys": "$^", "obs_noise_std": 0.0, "action_noise_std": 0.0, "latency_steps": [0, 0]}
        self.obs_rng, self.act_rng = stream(seed, NAME, 0), stream(seed, NAME, 1)
        lo, hi = cfg["latency_steps"]
        self.latency = int(lo + min(int(stream(seed, NAME, 2).random() * (hi - lo + 1)), hi - lo))
        self.obs_std, self.act_std = float(cfg["obs_noise_std"]), float(cfg["action_noise_std"])
        self.obs_keys = re.compile(cfg["obs_keys"])
        self.low, self.high = low, high
        self.queue: deque = deque()

    @property
    def params(self) -> dict:
        return {"latency_steps": self.latency, "obs_noise_std": self.obs_std, "action_noise_std": self.act_std}

    def _noisy(self, x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            return x
        return (x + self.obs_std * self.obs_rng.standard_normal(x.shape)).astype(x.dtype)

    def observe(self, obs):
        if isinstance(obs, dict):
            return {k: self._noisy(v) if self.obs_keys.fullmatch(k) else v for k, v in obs.items()}
        return self._noisy(obs)

    def act(self, action):
        action = np.asarray(action)
        noise = self.act_std * self.act_rng.standard_normal(action.shape)
        self.queue.append(np.clip(action + noise, self.low, self.high).astype(action.dtype))
        if len(self.queue) <= self.latency:
            return np.clip(np.zeros_like(action), self.low, self.high).astype(action.dtype)  # hold
        return self.queue.popleft()
