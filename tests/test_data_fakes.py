"""Tiny synthetic demonstration stores with the env's keys (shared by the data/policy/train tests)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from realgap.data.replay_buffer import ReplayBuffer

INSTRUCTIONS = ["place the red block in the yellow rack", "place the blue vial in the green bowl"]


def fake_store(path, n_episodes=6, lengths=None, image=False, seed=0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer.create(path)
    for e in range(n_episodes):
        n = lengths[e] if lengths else int(rng.integers(12, 25))
        steps = {
            "proprio": rng.normal(size=(n, 8)).astype(np.float32),
            "object_state": np.concatenate([np.ones((n, 1)), rng.normal(size=(n, 5)), np.zeros((n, 6))], 1).astype(np.float32),
            "action": np.clip(rng.normal(size=(n, 4)) * 0.5, -1, 1).astype(np.float32),
        }
        steps["proprio"][:, 0] = np.arange(n) + 1000 * e  # step marker: lets tests see which frame a window holds
        if image:
            steps["image_front"] = rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)
        buf.append_episode(steps, {"seed": e, "instruction": INSTRUCTIONS[e % 2], "success": True})
    return buf


def tiny_policy_cfg(**over):
    cfg = {"horizon": 8, "n_obs_steps": 2, "n_action_steps": 4, "state_keys": ["proprio", "object_state"],
           "image_keys": [], "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4, "step_embed_dim": 16,
           "state_feature_dim": 16, "state_hidden_dim": 32, "instruction_dim": 8, "num_inference_steps": 4,
           "image_channels": [8, 8, 8], "image_keypoints": 4, "image_feature_dim": 8, "crop_size": 28,
           "transformer": {"d_model": 16, "n_layers": 1, "n_heads": 2}}
    cfg.update(over)
    return cfg


def train_cfg(data_path, out_dir, steps=6, policy=None, **train_over):
    train = {"seed": 0, "steps": steps, "batch_size": 8, "lr": 3e-4, "betas": [0.95, 0.999], "weight_decay": 1e-6,
             "warmup_steps": 2, "ema_power": 0.75, "val_ratio": 0.2, "max_episodes": None, "val_every": 3,
             "val_batches": 1, "checkpoint_every": 3, "rollout_every": 0, "rollout_episodes": 0, "rollout_batch": 2,
             "rollout_seed_start": 1000000, "torch_threads": 1}
    train.update(train_over)
    pol = {"name": "tiny", "denoiser": "unet", **tiny_policy_cfg(), **(policy or {})}
    return OmegaConf.create({"data": {"path": str(data_path), "env_id": "realgap/PlaceInReceptacle-v0", "obs_mode": "state",
                                      "image_size": 96, "cameras": ["front"]},
                             "policy": pol, "out_dir": str(out_dir), "train": train})


@pytest.fixture(scope="module", autouse=False)
def one_torch_thread():
    """Tiny models are ~10x faster on one thread when the 2 CI cores are shared; restore afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
