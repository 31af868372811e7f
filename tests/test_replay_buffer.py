import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError


def _episode(t: int, seed: int):
    rng = np.random.default_rng(seed)
    return {
        "action": rng.uniform(-1, 1, (t, 4)).astype(np.float32),
        "image_front": rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8),
    }


def test_roundtrip_layout_and_metadata(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "s.zarr")
    eps = [_episode(t, i) for i, t in enumerate([3, 5, 1])]
    for i, ep in enumerate(eps):
        assert buf.append_episode(ep, {"seed": np.int64(i), "success": np.bool_(i % 2), "x": np.float32(0.5)}) == i
    ro = ReplayBuffer.open(tmp_path / "s.zarr")
    assert ro.n_episodes == 3 and ro.n_steps == 9
    np.testing.assert_array_equal(ro.episode_ends, [3, 8, 9])
    assert ro.keys == ["action", "image_front"]
    for i, ep in enumerate(eps):
        got = ro.episode(i)
        for k in ep:
            np.testing.assert_array_equal(got[k], ep[k])  # lossless, images included
    assert ro.episode_info(1) == {"seed": 1, "success": True, "x": 0.5}
    assert [i["seed"] for i in ro.episode_infos()] == [0, 1, 2]
    # diffusion_policy readers find the plain layout
    import zarr

    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root["data/action"].shape == (9, 4)
    assert json.loads(str(root["meta/episode_info"][2]))["seed"] == 2


def test_uncommitted_tail_is_truncated_on_append_open(tmp_path):
    path = tmp_path / "s.zarr"
    buf = ReplayBuffer.create(path)
    buf.append_episode(_episode(4, 0), {"seed": 0})
    # simulate a kill after data was written but before the commit marker moved
    buf.root["data/action"].resize((7, 4))
    buf.root["meta/episode_ends"].resize((2,))
    assert ReplayBuffer.open(path).n_steps == 4  # readers ignore the tail
    buf2 = ReplayBuffer.open(path, mode="a")
    assert buf2.root["data/action"].shape[0] == 4 and buf2.root["meta/episode_ends"].shape[0] == 1
    buf2.append_episode(_episode(2, 1), {"seed": 1})
    np.testing.assert_array_equal(ReplayBuffer.open(path).episode_ends, [4, 6])


def test_kill_9_mid_write_leaves_valid_store(tmp_path):
    path = tmp_path / "s.zarr"
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from realgap.data.replay_buffer import ReplayBuffer
        buf = ReplayBuffer.create({str(path)!r})
        i = 0
        while True:
            buf.append_episode({{"a": np.full((50, 64, 64, 3), i % 255, np.uint8)}}, {{"seed": i}})
            i += 1
            if i == 3: print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    buf = ReplayBuffer.open(path, mode="a")
    n = buf.n_episodes
    assert n >= 3
    for i in range(n):
        ep = buf.episode(i)["a"]
        assert ep.shape == (50, 64, 64, 3) and (ep == i % 255).all()
    assert [info["seed"] for info in buf.episode_infos()] == list(range(n))


def test_output_rules(tmp_path):
    path = tmp_path / "out.zarr"
    ReplayBuffer.open_output(path, resume=False, overwrite=False).append_episode(_episode(2, 0), {})
    with pytest.raises(RealgapError, match="--resume.*--overwrite"):
        ReplayBuffer.open_output(path, resume=False, overwrite=False)
    assert ReplayBuffer.open_output(path, resume=True, overwrite=False).n_episodes == 1
    assert ReplayBuffer.open_output(path, resume=False, overwrite=True).n_episodes == 0


def test_bad_stores_give_one_line_errors(tmp_path):
    with pytest.raises(RealgapError, match="not a zarr store"):
        ReplayBuffer.open(tmp_path / "missing.zarr")
    path = tmp_path / "s.zarr"
    buf = ReplayBuffer.create(path)
    for i in range(3):
        buf.append_episode(_episode(2, i), {})
    buf.root["meta/episode_ends"][1] = 1  # not monotone
    with pytest.raises(RealgapError, match="episode_ends is not strictly increasing"):
        ReplayBuffer.open(path)
    import shutil

    shutil.rmtree(path / "meta" / "episode_ends")
    with pytest.raises(RealgapError, match="episode_ends"):
        ReplayBuffer.open(path)


def test_mismatched_keys_rejected_before_writing(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "s.zarr")
    buf.append_episode(_episode(2, 0), {})
    with pytest.raises(ValueError, match="differ"):
        buf.append_episode({"action": np.zeros((2, 4), np.float32)}, {})
    assert buf.n_episodes == 1 and buf.n_steps == 2


def test_batched_append_equals_one_by_one(tmp_path):
    eps = [(_episode(t, i), {"seed": i}) for i, t in enumerate([2, 4, 3])]
    one = ReplayBuffer.create(tmp_path / "one.zarr")
    for steps, info in eps:
        one.append_episode(steps, info)
    many = ReplayBuffer.create(tmp_path / "many.zarr")
    assert many.append_episodes(eps[:2]) == [0, 1]
    assert many.append_episodes(eps[2:]) == [2]
    np.testing.assert_array_equal(one.episode_ends, many.episode_ends)
    assert one.episode_infos() == many.episode_infos()
    for i in range(3):
        for k, v in one.episode(i).items():
            np.testing.assert_array_equal(v, many.episode(i)[k])
    with pytest.raises(ValueError, match="differ"):  # one bad episode rejects the whole batch
        many.append_episodes([eps[0], ({"action": np.zeros((2, 4), np.float32)}, {})])
    assert many.n_episodes == 3


def _chunked_store(path, monkeypatch):
    """6 episodes of 5 steps whose data/action chunks hold 4 steps each (chunk c covers steps 4c..4c+3)."""
    import realgap.data.replay_buffer as rb

    monkeypatch.setattr(rb, "CHUNK_BYTES", 4 * 4 * 4)  # 4 rows of 4 float32
    buf = ReplayBuffer.create(path)
    for i in range(6):
        buf.append_episode({"action": np.full((5, 4), i + 1, np.float32)}, {"condition": "nominal", "seed": 100 + i})
    assert buf.root["data/action"].chunks == (4, 4)
    return buf


def test_every_array_is_checksummed_and_all_zero_chunks_are_written(tmp_path, monkeypatch):
    from zarr.codecs import Crc32cCodec

    buf = _chunked_store(tmp_path / "s.zarr", monkeypatch)
    buf.append_episode({"action": np.zeros((8, 4), np.float32)}, {"seed": 7})  # all fill value
    for name in ("data/action", "meta/episode_ends", "meta/episode_info"):
        assert any(isinstance(c, Crc32cCodec) for c in buf.root[name].metadata.codecs), name
    chunk_files = list((tmp_path / "s.zarr" / "data" / "action" / "c").iterdir())
    assert len(chunk_files) == 10  # ceil(38 / 4): the zero chunks exist too
    assert buf.unchecksummed == []
    assert ReplayBuffer.open(tmp_path / "s.zarr").verify() == 10 + 1 + 1


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_verify_names_the_damaged_array_and_first_episode(tmp_path, monkeypatch, damage):
    path = tmp_path / "s.zarr"
    _chunked_store(path, monkeypatch)
    chunk = path / "data" / "action" / "c" / "3" / "0"  # steps 12..15 -> episode 2 (steps 10..14) first
    raw = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(raw[: len(raw) // 2])
    elif damage == "delete":
        chunk.unlink()
    else:  # one flipped bit in the middle of the compressed bytes
        chunk.write_bytes(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    store = ReplayBuffer.open(path)
    assert store.episode(0)["action"][0, 0] == 1  # untouched chunks still read
    with pytest.raises(RealgapError) as err:
        store.verify()
    msg = str(err.value)
    assert "data/action chunk c/3/0" in msg and "episode 2 (condition nominal, seed 102)" in msg
    assert ("missing" in msg) == (damage == "delete") and len(msg.splitlines()) == 1


def test_verify_catches_damaged_metadata_arrays(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    _chunked_store(path, monkeypatch)
    (path / "meta" / "episode_info" / "c" / "0").write_bytes(b"\x00" * 12)
    with pytest.raises(RealgapError, match="meta/episode_info chunk c/0 is damaged"):
        ReplayBuffer.open(path).verify()
