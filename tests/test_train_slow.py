"""Real collection + training through the CLI (slow: a few minutes on 2 cores).

Learning is judged against the same network untrained, measured here rather than assumed:
- validation loss (epsilon MSE on held-out demo windows) below 0.35 of the untrained model's;
- open-loop actions: on held-out demo windows, the trained policy's sampled action chunks are at
  least 2x closer (MSE) to the expert's actions than the untrained policy's chunks.
"""

import json

import numpy as np
import pytest
import torch

from realgap.cli import main as cli


def action_mse(model, dataset, n_windows=48):
    """Mean squared error of sampled action chunks vs the demo's actions on the first held-out windows."""
    windows = np.arange(min(n_windows, len(dataset.val)))
    batch = dataset.batch(dataset.val, windows)
    chunks = model.sample_chunks(batch, num_samples=1, seed=[int(w) for w in windows])[:, 0]
    return float(np.mean((chunks - np.asarray(batch["action"], np.float32)) ** 2))


@pytest.mark.slow
def test_collect_train_and_roll_out_the_state_policy(tmp_path):
    from realgap.data.dataset import DemoDataset
    from realgap.policies.checkpoint import build_policy, load_diffusion
    from realgap.policies.train import validation_loss

    demos, out = tmp_path / "demos.zarr", tmp_path / "policy"
    assert cli(["collect", f"data.path={demos}", "data.n_episodes=40", "data.max_attempts=80"]) == 0
    assert cli(["train", f"data.path={demos}", f"out_dir={out}", "train.steps=800", "train.val_every=400",
                "train.checkpoint_every=400", "train.rollout_every=800", "train.rollout_episodes=4",
                "train.rollout_batch=4", "train.warmup_steps=100", "train.val_ratio=0.15"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve[-1]["n_rollouts"] == 4  # the in-training success check ran the policy in the env

    trained = load_diffusion(out)
    meta = json.loads((out / "policy.json").read_text())
    torch.manual_seed(0)
    untrained = build_policy(meta, "untrained").eval()  # same network and normalizer, initial weights
    cfg = trained.config
    dataset = DemoDataset(demos, [*cfg["state_keys"], *cfg["image_keys"]], cfg["horizon"], cfg["n_obs_steps"],
                          cfg["n_action_steps"], val_ratio=0.15, seed=0, tokenizer=trained.tokenizer)
    assert dataset.val is not None and len(dataset.val) >= 16

    loss_untrained = validation_loss(untrained, dataset, 0, 4, 32)
    loss_trained = validation_loss(trained, dataset, 0, 4, 32)
    assert loss_untrained > 0.5  # the bar below is measured against a model that has not learned
    assert loss_trained < 0.35 * loss_untrained, (loss_trained, loss_untrained)

    mse_untrained, mse_trained = action_mse(untrained, dataset), action_mse(trained, dataset)
    print(f"val loss {loss_trained:.4f} vs untrained {loss_untrained:.4f}; action MSE {mse_trained:.4f} vs "
          f"untrained {mse_untrained:.4f}; rollout success {curve[-1]['success_rate']} of 4")
    assert mse_trained < 0.5 * mse_untrained, (mse_trained, mse_untrained)

    # an existing output is refused with exit code 2 and left alone
    before = (out / "model.safetensors").read_bytes()
    assert cli(["train", f"data.path={demos}", f"out_dir={out}"]) == 2
    assert (out / "model.safetensors").read_bytes() == before
