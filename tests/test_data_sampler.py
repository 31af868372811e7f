"""Sequence sampler windows/padding, split, normalizer, tokenizer, dataset validation."""

import json

import numpy as np
import pytest
from test_data_fakes import INSTRUCTIONS, fake_store

from realgap.data.dataset import DemoDataset
from realgap.data.normalizer import Normalizer
from realgap.data.sampler import SequenceSampler, split_episodes
from realgap.data.tokenizer import UNK, WordTokenizer
from realgap.errors import RealgapError


def test_windows_cover_every_step_and_repeat_edge_frames():
    ends = np.array([5, 12])  # episodes of 5 and 7 steps
    s = SequenceSampler(ends, [0, 1], horizon=4, pad_before=1, pad_after=2)
    # per episode: starts from -pad_before to len - horizon + pad_after
    assert len(s) == (5 - 4 + 2 + 1 + 1) + (7 - 4 + 2 + 1 + 1)
    idx = s.indices(np.arange(len(s)))
    assert idx[0].tolist() == [0, 0, 1, 2]  # first frame repeated before the start
    last_ep0 = int(np.flatnonzero(s.episode == 0)[-1])
    assert idx[last_ep0].tolist() == [3, 4, 4, 4]  # last frame repeated past the end
    assert idx[last_ep0 + 1].tolist() == [5, 5, 6, 7]  # episode 1 never reads episode 0
    assert set(idx[s.episode == 1].ravel()) == set(range(5, 12))
    data = {"x": np.arange(12) * 10}
    assert s.gather(data, np.array([0]))["x"].tolist() == [[0, 0, 10, 20]]


def test_short_episode_still_yields_a_window():
    s = SequenceSampler(np.array([2]), [0], horizon=8, pad_before=0, pad_after=0)
    assert len(s) == 1 and s.indices(np.array([0])).tolist() == [[0, 1, 1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("ends", [[3, 3, 5], [4, 2], [0, 3], []])
def test_bad_episode_ends_rejected(ends):
    with pytest.raises(RealgapError, match="episode_ends"):
        SequenceSampler(np.array(ends), [0], horizon=2)


def test_split_is_by_episode_seeded_and_disjoint():
    tr, va = split_episodes(20, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
    assert np.array_equal(va, split_episodes(20, 0.25, seed=3)[1])
    assert not np.array_equal(va, split_episodes(20, 0.25, seed=4)[1])
    with pytest.raises(RealgapError, match="val_ratio"):
        split_episodes(5, 1.5, 0)


def test_normalizer_maps_to_unit_box_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(-3, 7, 200), np.full(200, 4.2), rng.normal(size=200)], 1).astype(np.float32)
    n = Normalizer.fit({"x": x})
    y = n.normalize("x", x)
    assert np.allclose(y[:, [0, 2]].min(0), -1, atol=1e-5) and np.allclose(y[:, [0, 2]].max(0), 1, atol=1e-5)
    assert np.allclose(y[:, 1], 0, atol=1e-6)  # constant dim: shifted, not scaled
    n2 = Normalizer.from_dict(json.loads(json.dumps(n.to_dict())))
    assert np.allclose(n2.unnormalize("x", n2.normalize("x", x)), x, atol=1e-5)
    import torch

    assert torch.allclose(n2.normalize("x", torch.as_tensor(x)), torch.as_tensor(y), atol=1e-6)


def test_normalizer_rejects_nan_and_bad_json():
    with pytest.raises(RealgapError, match="'x'"):
        Normalizer.fit({"x": np.array([[np.nan], [1.0]])})
    with pytest.raises(RealgapError, match="normalizer.x"):
        Normalizer.from_dict({"x": {"scale": [1.0]}})


def test_tokenizer_fixed_vocab_unknowns_and_round_trip():
    tok = WordTokenizer.from_texts(INSTRUCTIONS, max_len=6)
    ids = tok.encode(["Place the RED zebra block in the yellow rack"])
    assert ids.shape == (1, 6) and tok.vocab[ids[0, 3]] == UNK  # 'zebra' unknown
    assert tok.decode(ids[0]) == "place the red <unk> block in"  # truncated to max_len
    assert tok.decode(tok.encode([INSTRUCTIONS[0]])[0]).startswith("place the red block in")
    tok2 = WordTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert np.array_equal(tok2.encode(INSTRUCTIONS), tok.encode(INSTRUCTIONS))


def test_dataset_batches_pad_and_stats_come_from_train_split(tmp_path):
    fake_store(tmp_path / "d.zarr", n_episodes=5, lengths=[10, 12, 9, 11, 14])
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state"], horizon=8, n_obs_steps=2, n_action_steps=4,
                     val_ratio=0.2, seed=0)
    assert len(ds.val_episodes) == 1 and len(ds.train_episodes) == 4
    b = ds.batch(ds.train, np.array([0]))
    assert b["proprio"].shape == (1, 2, 8) and b["action"].shape == (1, 8, 4) and len(b["instruction"]) == 1
    e0 = ds.train_episodes[0]
    assert b["proprio"][0, :, 0].tolist() == [1000 * e0, 1000 * e0]  # first frame padded
    lo = min(1000 * int(e) for e in ds.train_episodes)
    hi = max(1000 * int(e) + n - 1 for e, n in zip(range(5), [10, 12, 9, 11, 14]) if e in ds.train_episodes)
    assert np.isclose(ds.normalizer.unnormalize("proprio", np.full((1, 8), -1.0, np.float32))[0, 0], lo, atol=1e-2)
    assert np.isclose(ds.normalizer.unnormalize("proprio", np.full((1, 8), 1.0, np.float32))[0, 0], hi, atol=1e-2)


def test_dataset_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(RealgapError, match="data.path"):
        DemoDataset(tmp_path / "missing.zarr", ["proprio"], 8, 2, 4)
    fake_store(tmp_path / "d.zarr", n_episodes=2)
    with pytest.raises(RealgapError, match="missing data/image_front"):
        DemoDataset(tmp_path / "d.zarr", ["proprio", "image_front"], 8, 2, 4)
    from realgap.data.replay_buffer import ReplayBuffer

    ReplayBuffer.create(tmp_path / "empty.zarr")
    with pytest.raises(RealgapError, match="empty"):
        DemoDataset(tmp_path / "empty.zarr", ["proprio"], 8, 2, 4)


def _rows_with_noise_only_items(n: int, sigma: float, rng) -> np.ndarray:
    """object_state like the old sensing axis wrote it: item 0 present and moving, item 1 absent but noisy."""
    present = np.stack([np.ones(n), rng.uniform(0.3, 0.7, n), rng.uniform(-0.2, 0.2, n), rng.uniform(0.02, 0.1, n),
                        np.cos(rng.uniform(-0.5, 0.5, n)), np.sin(rng.uniform(-0.5, 0.5, n))], 1)
    absent = sigma * rng.standard_normal((n, 6))
    return np.concatenate([present, absent], 1).astype(np.float32)


def test_noise_only_dims_pass_through_and_a_held_out_row_stays_sane():
    rng = np.random.default_rng(1)
    sigma = 0.002
    x = _rows_with_noise_only_items(5000, sigma, rng)
    held_out = np.array([[1, 0.5, -0.1, 0.03, 0.96, 0.28] * 2], np.float32)  # item 1 shows up at test time
    blown = Normalizer.fit({"s": x}).normalize("s", held_out)  # what min-max did without the noise level
    assert np.abs(blown).max() > 50
    n = Normalizer.fit({"s": x}, noise_std={"s": sigma})
    assert np.array_equal(n.stats["s"]["scale"][6:], np.ones(6, np.float32))  # noise-only: not stretched
    y = n.normalize("s", held_out)
    assert np.abs(y).max() <= 1.5, y  # the held-out row reaches the policy near its raw values
    np.testing.assert_allclose(y[0, 6:], held_out[0, 6:], atol=4 * sigma)  # shifted by ~0 only
    z = n.normalize("s", x)  # the signal dims are still min-max scaled to [-1, 1]
    assert np.allclose(z[:, 1:4].min(0), -1, atol=1e-5) and np.allclose(z[:, 1:4].max(0), 1, atol=1e-5)
    # An exactly-zero training dim (absent rows once sensing spares them) passes through without noise_std too.
    zero = Normalizer.fit({"s": np.concatenate([x[:, :6], np.zeros((5000, 6), np.float32)], 1)})
    assert np.abs(zero.normalize("s", held_out)).max() <= 1.5


def test_dataset_takes_the_noise_level_from_the_recorded_dr_params(tmp_path):
    from realgap.data.replay_buffer import ReplayBuffer

    rng = np.random.default_rng(2)
    buf = ReplayBuffer.create(tmp_path / "d.zarr")
    for e in range(4):
        steps = {"proprio": rng.normal(size=(30, 8)).astype(np.float32),
                 "object_state": _rows_with_noise_only_items(30, 0.002, rng),
                 "action": (0.004 * rng.normal(size=(30, 4))).astype(np.float32)}  # small, within 3 sigma
        buf.append_episode(steps, {"seed": e, "instruction": INSTRUCTIONS[0], "success": True,
                                   "dr_params": {"sensing": {"obs_noise_std": 0.002}}})
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state"], 8, 2, 4, val_ratio=0.25)
    scale = ds.normalizer.stats["object_state"]["scale"]
    assert np.array_equal(scale[6:], np.ones(6, np.float32)) and np.all(scale[1:4] != 1)
    assert np.all(ds.normalizer.stats["action"]["scale"] > 10)  # actions are never treated as sensor noise


def test_a_row_never_present_in_training_is_normalised_like_the_seen_rows_once_present():
    rng = np.random.default_rng(3)
    n = 4000
    seen = _rows_with_noise_only_items(n, 0.0, rng)[:, :6]  # item 0: present, moving
    seen[rng.random(n) < 0.3] = 0.0  # sometimes absent
    x = np.concatenate([seen, np.zeros((n, 6), np.float32)], 1).astype(np.float32)  # item 1: never present
    norm = Normalizer.fit({"s": x}, rows={"s": 6})
    y = norm.normalize("s", x)
    np.testing.assert_array_equal(y, Normalizer.fit({"s": x}).normalize("s", x))  # training inputs unchanged
    row = np.array([1, 0.5, -0.1, 0.03, 0.96, 0.28], np.float32)
    both = np.concatenate([row, row])[None]
    z = norm.normalize("s", both)
    np.testing.assert_allclose(z[0, 6:], z[0, :6], rtol=1e-6)  # the unseen item reads like the seen one
    import torch

    np.testing.assert_allclose(norm.normalize("s", torch.as_tensor(both)).numpy(), z, rtol=1e-6)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(again.normalize("s", both), z, rtol=1e-6)
