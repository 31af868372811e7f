"""Real collection + training through the CLI (slow: a few minutes on 2 cores)."""

import json

import pytest

from realgap.cli import main as cli


@pytest.mark.slow
def test_collect_train_and_roll_out_the_state_policy(tmp_path):
    demos, out = tmp_path / "demos.zarr", tmp_path / "policy"
    assert cli(["collect", f"data.path={demos}", "data.n_episodes=40", "data.max_attempts=80"]) == 0
    assert cli(["train", f"data.path={demos}", f"out_dir={out}", "train.steps=800", "train.val_every=400",
                "train.checkpoint_every=400", "train.rollout_every=800", "train.rollout_episodes=4",
                "train.rollout_batch=4", "train.warmup_steps=100"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    # it learns: an untrained denoiser's epsilon MSE is ~1.0, and the loss still falls between checks
    assert curve[-1]["val_loss"] < 0.35 and curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert curve[-1]["n_rollouts"] == 4 and 0.0 <= curve[-1]["success_rate"] <= 1.0  # the policy runs in the env
    # an existing output is refused with exit code 2 and left alone
    before = (out / "model.safetensors").read_bytes()
    assert cli(["train", f"data.path={demos}", f"out_dir={out}"]) == 2
    assert (out / "model.safetensors").read_bytes() == before
