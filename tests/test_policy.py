"""Diffusion policy sampling reproducibility, executor replanning, checkpoints, shape checks."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_data_fakes import INSTRUCTIONS, fake_store, one_torch_thread, tiny_policy_cfg  # noqa: F401

from realgap.data.dataset import DemoDataset
from realgap.errors import RealgapError
from realgap.policies.checkpoint import check_spaces, load_diffusion, load_policy, save_policy
from realgap.policies.diffusion import DiffusionPolicy, sample_seeds
from realgap.policies.executor import RecedingHorizonExecutor
from realgap.policies.protocol import Policy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "d.zarr"
    fake_store(path, n_episodes=4, image=True)
    return DemoDataset(path, ["proprio", "object_state", "image_front"], horizon=8, n_obs_steps=2, n_action_steps=4)


def make_policy(dataset, **over):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return DiffusionPolicy(tiny_policy_cfg(**over), dataset.shapes(), dataset.normalizer, dataset.tokenizer).eval()


def obs_batch(dataset, n=3):
    b = dataset.batch(dataset.train, np.arange(n))
    return {k: b[k] for k in ["proprio", "object_state", "image_front"]} | {"instruction": [INSTRUCTIONS[i % 2] for i in range(n)]}


ROWS = {"key": "object_state", "row_dim": 6, "n_queries": 2}


@pytest.mark.parametrize("denoiser,images,rows", [("unet", [], None), ("transformer", [], None),
                                                  ("unet", ["image_front"], None), ("unet", [], ROWS),
                                                  ("unet", [], {**ROWS, "mode": "named", "row_names": ["red block", "yellow rack"]})])
def test_same_seed_same_chunks_and_k_in_one_call_equals_k_calls(dataset, denoiser, images, rows):
    p = make_policy(dataset, denoiser=denoiser, image_keys=images, row_attention=rows,
                    relative_position={"enabled": rows is not None, "ee_key": "proprio", "ee_dims": [0, 1, 2],
                                       "row_dims": [1, 2, 3], "scale": 10.0})
    obs = obs_batch(dataset)
    a = p.sample_chunks(obs, num_samples=5, seed=[7, 8, 9])
    assert a.shape == (3, 5, 8, 4) and np.all(np.isfinite(a))
    assert np.array_equal(a, p.sample_chunks(obs, num_samples=5, seed=[7, 8, 9]))
    assert not np.allclose(a[:, 0], a[:, 1])  # different samples really differ
    assert not np.allclose(a, p.sample_chunks(obs, num_samples=5, seed=[70, 8, 9])[:, :])
    for b in range(3):  # one observation, one sample per call, explicit per-sample seed
        one = {k: v[b:b + 1] for k, v in obs.items() if k != "instruction"} | {"instruction": [obs["instruction"][b]]}
        for k, s in enumerate(sample_seeds([7, 8, 9][b], 5)):
            single = p.sample_chunks(one, num_samples=1, sample_seed_lists=[[s]])
            if denoiser == "unet":  # bit-exact whatever shares the call (B, K)
                assert np.array_equal(single[0, 0], a[b, k]), (b, k, np.abs(single[0, 0] - a[b, k]).max())
            else:  # the transformer's batched attention kernels: float32 rounding only
                np.testing.assert_allclose(single[0, 0], a[b, k], atol=1e-5, rtol=0)


def test_chunks_are_bit_exact_across_batch_size_and_k_and_match_the_module_path(dataset):
    """Sample 0 of a slot is the same bits alone (B=1, K=1), in B=3 x K=4 and in a 20 x 8 call; the
    inference-only GEMM convolutions agree with torch's own conv modules to float32 rounding."""
    p = make_policy(dataset, image_keys=["image_front"], down_dims=[16, 32, 64])
    obs = obs_batch(dataset, 3)
    alone = p.sample_chunks({k: v[:1] for k, v in obs.items()}, 1, seed=[11])
    big = {k: (np.concatenate([v] * 7)[:20] if k != "instruction" else (v * 7)[:20]) for k, v in obs.items()}
    for got in (p.sample_chunks(obs, 4, seed=[11, 12, 13])[0, 0], p.sample_chunks(big, 8, seed=[11] * 20)[18, 0]):
        assert np.array_equal(got, alone[0, 0])
    x, t = torch.randn(5, 8, 4), torch.tensor([3, 50, 99, 0, 10])
    cond = p.encode(p.to_tensors({k: np.concatenate([v, v[:2]]) if k != "instruction" else v + v[:2] for k, v in obs.items()}))
    with torch.no_grad():
        ref = p.denoiser(x, t, cond)
    with torch.inference_mode():
        fast = p.denoiser(x, t, cond)
        films = [f[:, 0] for f in p.denoiser.films(t, cond[:1])]  # precomputed FiLM for observation 0 at 5 steps
        pre = p.denoiser(x, None, None, films=films)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(pre[0], ref[0], atol=1e-5, rtol=0)


def test_hand_written_ddim_step_equals_diffusers(dataset):
    from diffusers import DDIMScheduler

    p = make_policy(dataset, num_inference_steps=10)
    ref = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                        prediction_type="epsilon", set_alpha_to_one=True)
    ref.set_timesteps(10)
    table = p.ddim_table(10)
    assert [row[0] for row in table] == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 4, generator=g) * 2
    for t, *coefs in table:
        eps = torch.randn(6, 8, 4, generator=g) * 3  # large enough that x0 gets clipped
        want = ref.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        got = p.ddim_step(x, eps, coefs)
        assert torch.equal(got, want), t
        x = want


def test_row_attention_selects_rows_named_by_the_instruction(dataset):
    p = make_policy(dataset, row_attention=ROWS)
    assert p.row_attn.row_key.shape == (2, 32)  # fake object_state: 12 dims = 2 rows of 6
    with torch.no_grad():  # make query 0 pick row 1 whatever the instruction
        p.row_attn.query.weight.zero_()
        p.row_attn.query.bias.copy_(torch.cat([p.row_attn.row_key[1] * 1e4, torch.zeros(32)]))
    rows = torch.arange(24, dtype=torch.float32).reshape(1, 2, 12)
    out = p.row_attn(rows, torch.zeros(1, 8))
    assert torch.allclose(out[0, :, :6], rows[0, :, 6:], atol=1e-3)
    with pytest.raises(RealgapError, match="row_attention.row_dim"):
        make_policy(dataset, row_attention={**ROWS, "row_dim": 5})
    with pytest.raises(RealgapError, match="row_attention.key"):
        make_policy(dataset, row_attention={**ROWS, "key": "image_front"})


def test_named_rows_follow_the_order_of_mention():
    from realgap.policies.networks import named_row_weights

    names = ["red block", "blue block", "yellow rack", "green bowl"]
    w = named_row_weights(["place the blue block in the yellow rack", "place the red block  in the green bowl",
                           "do a dance"], names, 2)
    assert w[0].argmax(-1).tolist() == [1, 2] and w[1].argmax(-1).tolist() == [0, 3]
    assert torch.allclose(w[2], torch.full((2, 4), 0.25))  # nothing named: uniform


def test_named_row_attention_changes_chunks_with_the_instruction(dataset, tmp_path):
    rows = {**ROWS, "mode": "named", "row_names": ["red block", "blue vial"]}
    p = make_policy(dataset, row_attention=rows)
    obs = obs_batch(dataset, 1)
    a = p.sample_chunks(obs | {"instruction": ["place the red block in the blue vial"]}, 1, seed=0)
    b = p.sample_chunks(obs | {"instruction": ["place the blue vial in the red block"]}, 1, seed=0)
    assert not np.allclose(a, b)
    save_policy(tmp_path / "c", p)
    assert load_diffusion(tmp_path / "c").config["row_attention"]["row_names"] == ["red block", "blue vial"]
    with pytest.raises(RealgapError, match="row_names"):
        make_policy(dataset, row_attention={**rows, "row_names": ["red block"]})


def test_random_crop_in_training_centre_crop_at_eval(dataset):
    p = make_policy(dataset, image_keys=["image_front"])
    img = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).expand(2, 3, 32, 32)
    centre = p._crop(img, None)
    assert centre.shape[-1] == 28 and torch.equal(centre, img[..., 2:30, 2:30])
    crops = p._crop(img.repeat(8, 1, 1, 1), torch.Generator().manual_seed(1))
    assert len({c[0, 0, 0].item() for c in crops}) > 1


class CountingPolicy:
    """Wraps a policy to record every sample_chunks call (batch size and seeds)."""

    def __init__(self, policy):
        self.inner, self.calls = policy, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def eval(self):
        return self

    def sample_chunks(self, obs, num_samples, seed):
        self.calls.append(list(seed))
        return self.inner.sample_chunks(obs, num_samples=num_samples, seed=seed)


def env_obs(dataset, i):
    b = dataset.batch(dataset.train, np.array([i]))
    return {"proprio": b["proprio"][0, -1], "object_state": b["object_state"][0, -1], "image_front": b["image_front"][0, -1],
            "instruction": INSTRUCTIONS[0]}


def test_executor_replans_every_n_action_steps_in_one_batched_call(dataset):
    p = CountingPolicy(make_policy(dataset))
    seen = []
    ex = RecedingHorizonExecutor(p, num_samples=3, on_chunk=lambda slot, step, c: seen.append((slot, step, c.shape)))
    assert isinstance(ex, Policy)
    ex.reset([11, 12, 13])
    for t in range(10):
        slots = [0, 1, 2] if t < 6 else [0, 2]  # slot 1 finishes after 6 steps
        a = ex.act([env_obs(dataset, t) for _ in slots], slots)
        assert a.shape == (len(slots), 4) and np.all(np.abs(a) <= 1)
        fresh = [c is not None for c in ex.last_chunks]  # aligned with slots; set only on replans
        assert fresh == [t % 4 == 0] * len(slots)
    assert [len(c) for c in p.calls] == [3, 3, 2]  # steps 0, 4, 8: all slots in one call
    assert [step for slot, step, _ in seen if slot == 0] == [0, 4, 8]
    assert ex.slot_chunks[2].shape == (3, 8, 4) and seen[0][2] == (3, 8, 4)
    assert ex.replans == [3, 2, 3]


def test_executor_actions_do_not_depend_on_batch_composition(dataset):
    p = make_policy(dataset)
    alone, together = RecedingHorizonExecutor(p), RecedingHorizonExecutor(p)
    alone.reset([42])
    together.reset([5, 42, 6])
    for t in range(6):
        o = env_obs(dataset, t)
        a1 = alone.act([o], [0])
        a3 = together.act([env_obs(dataset, t + 1), o, env_obs(dataset, t + 2)], [0, 1, 2])
        np.testing.assert_allclose(a1[0], a3[1], atol=1e-5)
    # after 6 steps (replans at 0 and 4) the queue holds the rest of pred[To-1 : To-1+Ta] of sample 0
    expected = np.clip(alone.slot_chunks[0][0, 1 + 2:1 + 4], -1, 1)
    np.testing.assert_allclose(np.clip(np.stack(list(alone.queue[0])), -1, 1), expected)


def test_checkpoint_round_trip_is_exact_and_needs_no_pickle(dataset, tmp_path):
    p = make_policy(dataset, image_keys=["image_front"])
    save_policy(tmp_path / "ckpt", p)
    meta = json.loads((tmp_path / "ckpt" / "policy.json").read_text())
    assert meta["shapes"]["image_front"] == [32, 32, 3] and "vocab" in meta["tokenizer"]
    q = load_diffusion(tmp_path / "ckpt")
    obs = obs_batch(dataset, 2)
    assert np.array_equal(p.sample_chunks(obs, 2, seed=[1, 2]), q.sample_chunks(obs, 2, seed=[1, 2]))
    executor = load_policy(tmp_path / "ckpt", num_samples=4)  # what an evaluation suite loads
    assert isinstance(executor, Policy) and executor.num_samples == 4
    executor.reset([3])
    assert executor.act([env_obs(dataset, 0)], [0]).shape == (1, 4) and executor.last_chunks[0].shape == (4, 8, 4)


def test_checkpoint_shape_mismatch_and_damage_are_one_line_errors(dataset, tmp_path):
    p = make_policy(dataset)
    save_policy(tmp_path / "c", p)
    box = lambda *s: gym.spaces.Box(-1, 1, s, np.float32)  # noqa: E731
    obs_space = gym.spaces.Dict({"proprio": box(8), "object_state": box(13)})
    with pytest.raises(RealgapError, match=r"policy.json: shapes.object_state is \[12\], env gives \[13\]"):
        load_policy(tmp_path / "c", observation_space=obs_space)
    with pytest.raises(RealgapError, match="shapes.action"):
        check_spaces(p, action_space=box(7))
    with pytest.raises(RealgapError, match="no 'object_state'"):
        check_spaces(p, gym.spaces.Dict({"proprio": box(8)}))
    check_spaces(p, gym.spaces.Dict({"proprio": box(8), "object_state": box(12)}), box(4))  # matching: fine
    meta = json.loads((tmp_path / "c" / "policy.json").read_text())
    meta["config"]["down_dims"] = [16, 64]
    (tmp_path / "c" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(RealgapError, match="model.safetensors: weight"):
        load_policy(tmp_path / "c")
    (tmp_path / "c" / "policy.json").write_text("{not json")
    with pytest.raises(RealgapError, match="policy.json: invalid JSON"):
        load_policy(tmp_path / "c")
    with pytest.raises(RealgapError, match="does not exist"):
        load_policy(tmp_path / "nope")


IMAGE_CFG = {"state_keys": ["proprio"], "image_keys": ["image_front"], "image_encoder": "film",
             "instruction_encoder": "positional", "image_strides": [2, 2, 1],
             "image_aux": {"enabled": True, "row_names": ["red block", "yellow rack"]}}


def test_image_policy_grounds_words_in_the_encoder_and_reports_unknown_words(dataset):
    p = make_policy(dataset, **IMAGE_CFG)
    assert p.state_keys == ["proprio"] and not hasattr(p, "row_attn")  # no object_state input, no name lookup
    obs = obs_batch(dataset, 1)
    img = p.to_tensors(obs)
    with torch.no_grad():
        for film in p.image_enc["image_front"].films:  # FiLM starts as the identity; give it weights
            film.weight.normal_(0, 0.5)
        feats = [p.encode_images(img, p.instr_enc(torch.as_tensor(p.tokenizer.encode([text]))))["image_front"][0]
                 for text in ("place the red block in the yellow rack", "place the yellow block in the red rack")]
    assert not torch.allclose(feats[0], feats[1])  # same image, other words (same bag of words): other features
    odd = "place the zebra block in the yellow rack please"
    assert p.unknown_words(odd) == ["zebra", "please"]
    assert p.tokenizer.encode([odd])[0, 2] == 1  # <unk>
    chunks = p.sample_chunks(obs | {"instruction": [odd]}, 2, seed=0)
    assert chunks.shape == (1, 2, 8, 4) and np.all(np.isfinite(chunks))
    ex = RecedingHorizonExecutor(p)  # what a suite stores in each episode's info["policy"]
    ex.reset([1, 2])
    ex.act([env_obs(dataset, 0) | {"instruction": odd}, env_obs(dataset, 0)], [0, 1])
    assert ex.episode_info(0) == {"unknown_words": ["zebra", "please"]} and ex.episode_info(1) == {"unknown_words": []}


def test_auxiliary_labels_are_the_named_rows_positions(dataset):
    p = make_policy(dataset, **IMAGE_CFG)
    rows = torch.tensor([[1, 0.1, 0.2, 0.3, 1, 0], [1, -0.1, -0.2, 0.0, 1, 0]], dtype=torch.float32)  # red block, yellow rack
    obs = {"object_state": rows.reshape(1, 1, 12), "instructions": ["place the red block in the yellow rack"]}
    target = p.aux_targets(obs)[0, 0]
    torch.testing.assert_close(target[:6], torch.tensor([1.0, 2.0, 3.0, -1.0, -2.0, 0.0]))  # metres x 10
    torch.testing.assert_close(target[6:], torch.tensor([1, 1.0, 2.0, 3.0, 1, -1.0, -2.0, 0.0]))
    swapped = p.aux_targets({**obs, "instructions": ["place the yellow rack in the red block"]})[0, 0]
    torch.testing.assert_close(swapped[:6], target[[3, 4, 5, 0, 1, 2]])


def test_image_suite_preset_matches_the_shipped_image_checkpoint():
    """`realgap suite suite=image`: the env it builds gives exactly the observations the shipped image
    checkpoint reads (64x64 front camera, proprio), and the checkpoint has no object_state input."""
    from pathlib import Path

    import realgap
    from realgap.cli import compose

    cfg = compose("suite", ["suite=image"]).suite
    assert set(cfg.conditions) == {"nominal", "target_lab", "lighting", "appearance", "camera", "placement",
                                   "preplacement", "physics", "sensing"}
    ckpt = Path(realgap.__file__).parent / cfg.policy.spec
    p = load_diffusion(ckpt)
    assert p.state_keys == ["proprio"] and p.image_keys == ["image_front"] and p.film
    kw = cfg.env.kwargs
    assert kw.obs_mode == "state+image" and p.shapes["image_front"] == (kw.image_size, kw.image_size, 3)
    img = np.full((1, 2, kw.image_size, kw.image_size, 3), 128, np.uint8)
    chunks = p.sample_chunks({"image_front": img, "proprio": np.zeros((1, 2, 8), np.float32),
                              "instruction": ["place the red block in the yellow rack"]}, 2, seed=0)
    assert chunks.shape == (1, 2, p.horizon, 4) and np.all(np.isfinite(chunks))
    # the preset's execution (16 chunks, the medoid executed) is what its loader builds
    from realgap.evaluation.policy_loader import load_policy as load_spec

    ex = load_spec(cfg.policy.spec, dict(cfg.policy.kwargs))
    assert (ex.num_samples, ex.chunk_choice) == (16, "medoid")


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear", "scaled_linear"])
@pytest.mark.parametrize("n", [100, 1000])
def test_alphas_cumprod_equals_diffusers(schedule, n):
    """Sampling uses realgap's own schedule table (no diffusers import in suite workers): it must be diffusers'."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from realgap.policies.diffusion import alphas_cumprod

    ours = alphas_cumprod(n, schedule)
    for cls in (DDPMScheduler, DDIMScheduler):
        assert torch.equal(ours, cls(num_train_timesteps=n, beta_schedule=schedule).alphas_cumprod)


def test_loading_a_checkpoint_for_sampling_does_not_import_diffusers():
    import subprocess
    import sys

    code = ("import sys; from realgap.evaluation.policy_loader import load_policy; "
            "p = load_policy('realgap/checkpoints/state_policy', {}); "
            "import numpy as np; print('diffusers' in sys.modules)")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "False"


# --- sampling: the time-major UnetSampler (policies/networks.py) ------------------------------------------

def _randomize_norms(module, seed=0):
    """GroupNorm affine parameters away from (1, 0), so a sign slip in the sampler's negated affine shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))


@pytest.mark.parametrize("down_dims,kernel,horizon", [([16, 32], 3, 16), ([16, 32, 64], 5, 16), ([8, 16, 32], 3, 8),
                                                       ([16], 3, 16), ([8, 16], 7, 16)])
def test_unet_sampler_equals_the_module_path(dataset, down_dims, kernel, horizon):
    """One denoising step of the time-major sampler against torch's own Conv1d / ConvTranspose1d /
    GroupNorm / Mish modules (no_grad = the module path), for 1 and 5 chunks: equal to float32 rounding."""
    from realgap.policies.networks import UnetSampler

    p = make_policy(dataset, down_dims=down_dims, kernel_size=kernel, horizon=horizon, n_action_steps=4)
    _randomize_norms(p.denoiser)
    g = torch.Generator().manual_seed(1)
    for n in (1, 5):
        x = torch.randn(n, horizon, 4, generator=g) * 2
        cond_dim = p.denoiser.film_blocks[0].film[1].in_features - p.config["step_embed_dim"]
        t, cond = torch.randint(0, 100, (n,), generator=g), torch.randn(n, cond_dim, generator=g)
        with torch.no_grad():
            ref = p.denoiser(x, t, cond)
        with torch.inference_mode():  # each chunk's FiLM at its own step
            films = [torch.stack([p.denoiser.films(t[i:i + 1], cond[i:i + 1])[j][0, 0] for i in range(n)])
                     for j in range(len(p.denoiser.film_blocks))]
            got = p.denoiser(x, None, None, films=films, sampler=UnetSampler(p.denoiser))
        assert got.shape == ref.shape == (n, horizon, 4)
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)
        assert not torch.allclose(got, ref * 1.001, atol=0, rtol=1e-6)  # the check above is not vacuous


def test_sampler_mish_matches_torch_mish_over_the_whole_range():
    """mish(y) = z - 2z / (1 + sigmoid(z)^2) at z = -y, computed behind a GroupNorm with negated affine."""
    from realgap.policies.networks import UnetSampler

    gn = torch.nn.GroupNorm(2, 4)
    with torch.no_grad():
        gn.weight.copy_(torch.tensor([30.0, 1.0, 0.01, 80.0]))
        gn.bias.copy_(torch.tensor([-5.0, 0.3, 0.0, 20.0]))
    y = torch.randn(3 * 16, 4, generator=torch.Generator().manual_seed(0)) * 3  # (N * T, C) time-major
    sampler = UnetSampler.__new__(UnetSampler)
    sampler._weights, sampler.one = {}, torch.ones(())
    with torch.inference_mode():
        got = sampler._norm_mish(y, gn, 3, 16)
        want = torch.nn.functional.mish(gn(y.view(3, 16, 4).transpose(1, 2))).transpose(1, 2)
    assert want.min() < -0.3 and want.max() > 100  # both tails and the dip are exercised
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("name", ["state_policy", "image_policy_small"])
def test_shipped_checkpoints_sample_as_with_the_module_path(name, monkeypatch):
    """The shipped checkpoints load unchanged; their chunks through the sampler equal the previous sampling
    path (conv modules as GEMMs, NCT layout) to 1e-5 in action units at K = 8 (measured: ~1e-6), and sample
    0 of a K = 8 call is bit-identical to a K = 1 call."""
    from pathlib import Path

    import realgap
    from realgap.policies.networks import ConditionalUnet1D

    p = load_diffusion(Path(realgap.__file__).parent / "checkpoints" / name)
    rng = np.random.default_rng(0)
    obs = {k: rng.normal(0, 0.2, (2, p.n_obs_steps, *p.shapes[k])).astype(np.float32) for k in p.state_keys}
    obs |= {k: rng.integers(0, 255, (2, p.n_obs_steps, *p.shapes[k]), dtype=np.uint8) for k in p.image_keys}
    obs["instruction"] = ["place the red block in the yellow rack", "place the blue cup in the green bin"]
    new = p.sample_chunks(obs, 8, seed=[3, 4])
    one = p.sample_chunks({k: v[1:] for k, v in obs.items()}, 1, seed=[4])
    assert np.array_equal(one[0, 0], new[1, 0])
    monkeypatch.setattr(ConditionalUnet1D, "sampler", lambda unet: None)  # the previous path
    old = p.sample_chunks(obs, 8, seed=[3, 4])
    assert 0 < np.abs(new - old).max() <= 1e-5


def test_sampler_weight_cache_follows_weight_changes(dataset):
    """The sampler's prepared weights are reused across calls but never stale: after an in-place update and
    after load_state_dict(assign=True) the chunks equal those of a policy that never sampled before."""
    obs = obs_batch(dataset, 1)
    p = make_policy(dataset)
    before = p.sample_chunks(obs, 2, seed=[1])  # fills the cache
    fresh = make_policy(dataset)
    for m in (p, fresh):
        with torch.no_grad():
            for w in m.denoiser.parameters():
                w.mul_(1.01)
    after = p.sample_chunks(obs, 2, seed=[1])
    assert not np.allclose(after, before) and np.array_equal(after, fresh.sample_chunks(obs, 2, seed=[1]))
    state = {k: v * 0.99 if v.is_floating_point() else v for k, v in p.state_dict().items()}
    fresh = make_policy(dataset)
    for m in (p, fresh):
        m.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    again = p.sample_chunks(obs, 2, seed=[1])
    assert not np.allclose(again, after) and np.array_equal(again, fresh.sample_chunks(obs, 2, seed=[1]))


def test_gather_crops_equal_slice_crops():
    """Training crops on a GPU (one gather) must be the CPU's crops (a slice per image), pixel for pixel."""
    from realgap.policies.diffusion import gather_crops, slice_crops

    g = torch.Generator().manual_seed(0)
    img = torch.rand(37, 3, 64, 64, generator=g)
    tops, lefts = torch.randint(0, 7, (37,), generator=g), torch.randint(0, 7, (37,), generator=g)
    a, b = slice_crops(img, tops, lefts, 58), gather_crops(img, tops, lefts, 58)
    assert a.shape == b.shape == (37, 3, 58, 58)
    assert torch.equal(a, b)
    assert not torch.equal(a, slice_crops(img, lefts, tops, 58))  # offsets matter (rows vs columns)


def test_film_mish_has_torch_values_and_gradient():
    """The FiLM conv blocks' mish: F.mish's forward bit for bit (inference is unchanged), its gradient from
    vectorised ops within float rounding of aten's mish_backward."""
    import torch.nn.functional as F

    from realgap.policies.networks import _MishGrad, mish

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 16, 29, 29, generator=g) * 3).requires_grad_()
    up = torch.randn(8, 16, 29, 29, generator=g)
    assert torch.equal(mish(x), F.mish(x))
    ours, = torch.autograd.grad(mish(x), x, up)
    ref, = torch.autograd.grad(F.mish(x), x, up)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert torch.autograd.gradcheck(_MishGrad.apply, (torch.randn(30, dtype=torch.float64, generator=g).requires_grad_(),))
