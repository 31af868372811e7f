"""A suite refuses a checkpoint whose observation shapes don't fit the env, before writing anything."""

import os
import subprocess
import sys

import torch
from test_data_fakes import fake_store, tiny_policy_cfg

from realgap.data.dataset import DemoDataset
from realgap.policies.checkpoint import save_policy
from realgap.policies.diffusion import DiffusionPolicy


def test_mismatched_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    fake_store(tmp_path / "d.zarr", n_episodes=3)  # object_state of 12 values; the real env gives 66
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state"], horizon=8, n_obs_steps=2, n_action_steps=4)
    torch.manual_seed(0)
    save_policy(tmp_path / "ckpt", DiffusionPolicy(tiny_policy_cfg(), ds.shapes(), ds.normalizer, ds.tokenizer))
    out = tmp_path / "suite_out"
    proc = subprocess.run(
        [sys.executable, "-m", "realgap", "suite", f"suite.policy.spec={tmp_path / 'ckpt'}", f"out={out}",
         "conditions=[nominal]", "suite.seeds.n=2", "workers=1"],
        capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "ckpt") in lines[0] and "object_state" in lines[0], lines
    assert not out.exists()  # nothing written
