"""What a rollout actually runs: the EMA weights (not the raw ones) and DDIM with the configured steps.

- EMA: a few real training steps make the EMA and raw weights differ; the inference checkpoint
  (model.safetensors), ``load_diffusion`` and the suite's policy loader all hold the EMA ones, and the
  EMA itself follows diffusion_policy's warm-up recursion.
- DDIM: one ``sample_chunks`` call runs the denoiser exactly ``num_inference_steps`` times (10 for the
  shipped checkpoint, not the 100 DDPM training steps) and its chunks equal a plain loop over diffusers'
  ``DDIMScheduler`` (eta = 0, eps re-derived from the clipped x0 as realgap has always sampled) set to
  that many steps, run through the denoiser's module path.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_data_fakes import fake_store, one_torch_thread, train_cfg  # noqa: F401

import realgap
from realgap.evaluation.policy_loader import load_policy as suite_policy
from realgap.policies.checkpoint import FORMAT, build_policy, load_diffusion
from realgap.policies.diffusion import EMA, sample_seeds
from realgap.policies.train import main as train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CKPT = Path(realgap.__file__).parent / "checkpoints" / "state_policy"


# --- EMA ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    fake_store(root / "d.zarr", n_episodes=4)
    assert train(train_cfg(root / "d.zarr", root / "out", steps=6, lr=3e-3)) == 0
    state = load_file(str(root / "out" / "train_state.safetensors"))
    raw = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    return root / "out", raw, ema


def _float_params(tensors):
    return {k: v for k, v in tensors.items() if v.is_floating_point() and "running" not in k}


def test_training_leaves_ema_and_raw_weights_apart(trained):
    _, raw, ema = trained
    assert raw.keys() == ema.keys()
    differ = [k for k, v in _float_params(ema).items() if not torch.equal(v, raw[k])]
    assert len(differ) > 0.9 * len(_float_params(ema))  # otherwise the checks below prove nothing


def test_inference_checkpoint_and_loaders_hold_the_ema_weights(trained):
    out, raw, ema = trained
    shipped = load_file(str(out / "model.safetensors"))
    assert shipped.keys() == ema.keys()
    assert all(torch.equal(v, ema[k]) for k, v in shipped.items())
    for model in (load_diffusion(out), suite_policy(str(out)).policy):  # what `realgap suite` runs
        got = model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in ema.items())
        assert not all(torch.equal(got[k], v) for k, v in _float_params(raw).items())
        assert not model.training  # eval mode at inference


def test_ema_follows_the_warmup_recursion():
    """ema <- d * ema + (1 - d) * w with d = 1 - (1 + step)^-power (clamped), step counted from 0."""
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, power=0.75)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        d = min(max(1.0 - (1.0 + step) ** -0.75, 0.0), 0.9999)
        expected = {k: d * expected[k] + (1 - d) * v for k, v in net.state_dict().items()}
        ema.update(net)
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0)
        assert not torch.allclose(v, net.state_dict()[k])  # lagging, not a copy of the last weights


# --- DDIM ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return load_diffusion(CKPT)


def _obs(model, b=2):
    rng = np.random.default_rng(0)
    obs = {k: rng.normal(0, 0.1, (b, model.n_obs_steps, *model.shapes[k])).astype(np.float32) for k in model.state_keys}
    obs["instruction"] = ["place the red block in the yellow rack"] * b
    return obs


def _with_steps(model, steps):
    """The same weights with another ``num_inference_steps`` in the config."""
    other = build_policy({"format": FORMAT, "config": {**model.config, "num_inference_steps": steps}, "shapes": model.shapes,
                          "normalizer": model.normalizer.to_dict(), "tokenizer": model.tokenizer.to_dict()}, "test")
    other.load_state_dict(model.state_dict())
    return other.eval()


def _count_denoiser_calls(model, fn):
    calls = []
    handle = model.denoiser.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = fn()
    finally:
        handle.remove()
    return len(calls), out


def test_sampling_runs_the_configured_number_of_ddim_steps(shipped):
    cfg = shipped.config
    assert cfg["num_inference_steps"] == 10 and cfg["num_train_timesteps"] == 100
    obs = _obs(shipped)
    n, ten = _count_denoiser_calls(shipped, lambda: shipped.sample_chunks(obs, num_samples=3, seed=[1, 2]))
    assert n == 10  # one batched pass per DDIM step, never the 100-step DDPM chain
    # The step count comes from the config: the same weights with 4 steps run 4 passes and sample otherwise.
    four = _with_steps(shipped, 4)
    n4, chunks4 = _count_denoiser_calls(four, lambda: four.sample_chunks(obs, num_samples=3, seed=[1, 2]))
    assert n4 == 4 and not np.allclose(chunks4, ten, atol=1e-3)


@pytest.mark.parametrize("steps", [10, 4])
def test_chunks_equal_a_plain_diffusers_ddim_loop(shipped, steps):
    from diffusers import DDIMScheduler

    model = shipped if steps == shipped.config["num_inference_steps"] else _with_steps(shipped, steps)
    obs, k, seeds = _obs(model), 2, [5, 6]
    got = model.sample_chunks(obs, num_samples=k, seed=seeds)

    sched = DDIMScheduler(num_train_timesteps=model.config["num_train_timesteps"], beta_schedule=model.config["beta_schedule"],
                          clip_sample=True, prediction_type="epsilon", set_alpha_to_one=True)
    sched.set_timesteps(steps)
    with torch.no_grad():
        tensors = model.to_tensors(obs)
        cond = model.encode(tensors).repeat_interleave(k, dim=0)
        x = model.chunk_noise([sample_seeds(s, k) for s in seeds])
        for t in sched.timesteps:
            eps = model.denoiser(x, torch.full((x.shape[0],), int(t), dtype=torch.long), cond)
            x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        want = model.normalizer.unnormalize("action", x).reshape(got.shape).numpy()
    assert len(sched.timesteps) == steps
    np.testing.assert_allclose(got, want, atol=1e-4)
