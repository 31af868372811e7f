"""Training CLI behaviour on tiny synthetic demos: outputs, exact resume, NaN loss, bad input."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from test_data_fakes import fake_store, one_torch_thread, train_cfg  # noqa: F401

from realgap.errors import RealgapError
from realgap.policies.checkpoint import load_diffusion
from realgap.policies.train import lr_at, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "d.zarr"
    fake_store(path, n_episodes=5)
    return path


def test_train_writes_loadable_policy_and_curve(store, tmp_path):
    assert main(train_cfg(store, tmp_path / "out", steps=6)) == 0
    curve = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert [r["step"] for r in curve] == [3, 6] and all(np.isfinite(r["val_loss"]) for r in curve)
    assert (tmp_path / "out" / "curve.csv").read_text().startswith("step,lr,train_loss")
    p = load_diffusion(tmp_path / "out")
    obs = {"proprio": np.zeros((1, 2, 8), np.float32), "object_state": np.zeros((1, 2, 12), np.float32),
           "instruction": ["place the red block in the yellow rack"]}
    assert p.sample_chunks(obs, 2, seed=0).shape == (1, 2, 8, 4)


def test_killed_and_resumed_run_matches_uninterrupted_run(store, tmp_path):
    main(train_cfg(store, tmp_path / "full", steps=6))
    main(train_cfg(store, tmp_path / "part", steps=3))  # "killed" after the step-3 checkpoint
    main(train_cfg(store, tmp_path / "part", steps=6), resume=True)
    a = load_file(str(tmp_path / "full" / "train_state.safetensors"))
    b = load_file(str(tmp_path / "part" / "train_state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)


def test_existing_output_needs_resume_or_overwrite(store, tmp_path):
    main(train_cfg(store, tmp_path / "out", steps=3))
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    with pytest.raises(RealgapError, match="exists; pass --resume"):
        main(train_cfg(store, tmp_path / "out", steps=3))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    with pytest.raises(RealgapError, match="nothing to resume"):
        main(train_cfg(store, tmp_path / "fresh", steps=3), resume=True)


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(store, tmp_path):
    main(train_cfg(store, tmp_path / "out", steps=3))
    good = (tmp_path / "out" / "model.safetensors").read_bytes()
    state = load_file(str(tmp_path / "out" / "train_state.safetensors"))  # weights blown up to NaN
    state = {k: v.fill_(float("nan")) if k.startswith("model.") and v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(tmp_path / "out" / "train_state.safetensors"))
    with pytest.raises(RealgapError, match="loss is nan at step 3.*last good checkpoint kept") as e:
        main(train_cfg(store, tmp_path / "out", steps=6), resume=True)
    assert "\n" not in str(e.value)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == good


@pytest.mark.parametrize("field,value,match", [("steps", 0, "train.steps"), ("lr", -1.0, "train.lr"),
                                               ("batch_size", 0, "train.batch_size")])
def test_bad_config_rejected_before_anything_is_written(store, tmp_path, field, value, match):
    with pytest.raises(RealgapError, match=match):
        main(train_cfg(store, tmp_path / "out", **{field: value}))
    assert not (tmp_path / "out").exists()


def test_bad_dataset_rejected_before_anything_is_written(tmp_path):
    from realgap.data.replay_buffer import ReplayBuffer

    ReplayBuffer.create(tmp_path / "empty.zarr")
    with pytest.raises(RealgapError, match="empty"):
        main(train_cfg(tmp_path / "empty.zarr", tmp_path / "out"))
    fake_store(tmp_path / "d.zarr", n_episodes=3)
    with pytest.raises(RealgapError, match="missing data/image_front"):
        main(train_cfg(tmp_path / "d.zarr", tmp_path / "out", policy={"image_keys": ["image_front"]}))
    assert not (tmp_path / "out").exists()


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_device_auto_picks_cpu_without_a_gpu_and_cuda_without_a_gpu_is_one_line_error(store, tmp_path, monkeypatch):
    import torch

    from realgap.policies.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what a GPU machine reports
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same test on any machine
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RealgapError, match="train.device: cuda requested but no CUDA GPU") as e:
        main(train_cfg(store, tmp_path / "out", device="cuda"))
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    with pytest.raises(RealgapError, match="train.device: unknown 'tpu'"):
        main(train_cfg(store, tmp_path / "out", device="tpu"))
    assert main(train_cfg(store, tmp_path / "auto", steps=3, device="auto")) == 0


IMAGE_POLICY = {"state_keys": ["proprio"], "image_keys": ["image_front"], "image_encoder": "film",
                "instruction_encoder": "positional", "image_strides": [2, 2, 1],
                "image_aux": {"enabled": True, "row_names": ["red block", "yellow rack"]}}


def test_encoder_pretraining_then_frozen_cached_features_and_exact_resume(tmp_path):
    """Phase 1 trains only the FiLM encoder on the auxiliary position loss; phase 2 freezes it (EMA copy
    included) and trains the head on cached features; a run killed in phase 2 resumes exactly."""
    from realgap.policies.train import cache_image_features  # noqa: F401  (the phase-2 path under test)

    fake_store(tmp_path / "img.zarr", n_episodes=4, image=True)
    cfg = lambda out, steps: train_cfg(tmp_path / "img.zarr", tmp_path / out, steps=steps, policy=IMAGE_POLICY,  # noqa: E731
                                       encoder_pretrain_steps=3, freeze_encoder=True)
    assert main(cfg("full", 9)) == 0
    curve = json.loads((tmp_path / "full" / "curve.json").read_text())
    assert [r["phase"] for r in curve] == ["encoder", "policy", "policy"]
    state = load_file(str(tmp_path / "full" / "train_state.safetensors"))
    p = load_diffusion(tmp_path / "full")
    enc = {k: v for k, v in state.items() if k.startswith("ema.image_enc.")}
    assert enc and all(torch_equal(v, state["model." + k[4:]]) for k, v in enc.items())  # EMA encoder = frozen one
    assert "object_state" in p.shapes and p.state_keys == ["proprio"]  # labels only: never a policy input
    main(cfg("part", 6))
    main(cfg("part", 9), resume=True)
    b = load_file(str(tmp_path / "part" / "train_state.safetensors"))
    for k in state:
        np.testing.assert_allclose(state[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)
    with pytest.raises(RealgapError, match="encoder_pretrain_steps"):
        main(train_cfg(tmp_path / "img.zarr", tmp_path / "bad", steps=9, encoder_pretrain_steps=3))  # state policy


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_pointer_image_policy_trains_on_pixel_labels_and_acts_without_them(tmp_path):
    """With image_aux.pointer the encoder phase uses the projected pixel labels (training only); the
    saved policy samples chunks from images, proprio and words alone."""
    fake_store(tmp_path / "img.zarr", n_episodes=4, image=True)
    policy = {**IMAGE_POLICY, "image_aux": {**IMAGE_POLICY["image_aux"], "pointer": True, "pixel_weight": 1.0}}
    cfg = train_cfg(tmp_path / "img.zarr", tmp_path / "ptr", steps=6, policy=policy, encoder_pretrain_steps=3,
                    freeze_encoder=True)
    assert main(cfg) == 0
    curve = json.loads((tmp_path / "ptr" / "curve.json").read_text())
    assert [r["phase"] for r in curve] == ["encoder", "policy"] and all(np.isfinite(r["val_loss"]) for r in curve)
    p = load_diffusion(tmp_path / "ptr")
    assert not any(k.startswith("pixels:") for k in [*p.state_keys, *p.image_keys])
    rng = np.random.default_rng(0)
    obs = {"proprio": rng.normal(size=(1, 2, 8)).astype(np.float32),
           "image_front": rng.integers(0, 255, size=(1, 2, 32, 32, 3), dtype=np.uint8),
           "instruction": ["place the red block in the yellow rack"]}
    chunks = p.sample_chunks(obs, num_samples=2, seed=[0])
    assert chunks.shape[:2] == (1, 2) and np.all(np.isfinite(chunks))


def test_rollout_check_env_must_match_the_policy_before_anything_is_written(tmp_path):
    """An image policy checked in a state-only env faulted on every episode and read as 0% success."""
    fake_store(tmp_path / "img.zarr", n_episodes=4, image=True)
    cfg = train_cfg(tmp_path / "img.zarr", tmp_path / "out", steps=3, policy=IMAGE_POLICY, rollout_every=3,
                    rollout_episodes=2)
    with pytest.raises(RealgapError, match="train.rollout_every: the env of data=.*: shapes.image_front: env observation has no 'image_front'"):
        main(cfg)
    assert not (tmp_path / "out").exists()


def test_rollout_check_stops_on_a_policy_fault_instead_of_counting_a_failure():
    import realgap.envs as envs
    from realgap.policies.rollout import rollout_success

    class Broken:
        def reset(self, episode_seeds):
            pass

        def act(self, obs, slots):
            raise KeyError("image_front")

    with pytest.raises(RealgapError, match="rollout check: seed 7 faulted .*policy_error.*image_front"):
        rollout_success(lambda: envs.make("realgap/PlaceInReceptacle-v0"), Broken(), [7, 8], batch=2)
