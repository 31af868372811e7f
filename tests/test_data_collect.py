"""`realgap collect` with the real env and scripted expert (a handful of short episodes)."""

import numpy as np
import pytest

from realgap.cli import compose
from realgap.data import collect
from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError


def cfg(path, n=3, **data):
    over = [f"data.path={path}", f"data.n_episodes={n}", f"data.max_attempts={2 * n}"]
    return compose("collect", over + [f"data.{k}={v}" for k, v in data.items()])


def test_collect_writes_complete_episodes_with_info(tmp_path):
    assert collect.main(cfg(tmp_path / "d.zarr", n=2)) == 0
    buf = ReplayBuffer.open(tmp_path / "d.zarr")
    assert buf.n_episodes == 2 and buf.keys == ["action", "object_state", "proprio"]
    info = buf.episode_info(0)
    assert info["success"] is True and info["seed"] == 0 and info["instruction"].startswith("place the")
    assert {"task", "dr_params", "termination_reason", "length"} <= set(info)
    ep = buf.episode(0)
    assert len(ep["action"]) == info["length"] and np.all(np.abs(ep["action"]) <= 1)


def test_existing_store_needs_flag_and_resume_continues_with_next_seeds(tmp_path, monkeypatch):
    path = tmp_path / "d.zarr"
    real = collect.run_episode
    calls = []

    def killed_after_two(env, expert, seed):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill mid-collection
        calls.append(seed)
        return real(env, expert, seed)

    monkeypatch.setattr(collect, "run_episode", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        collect.main(cfg(path, n=3))
    monkeypatch.setattr(collect, "run_episode", real)
    assert ReplayBuffer.open(path).n_episodes == 2  # complete episodes only
    with pytest.raises(RealgapError, match="exists; pass --resume"):
        collect.main(cfg(path, n=3))
    collect.main(cfg(path, n=3), resume=True)
    buf = ReplayBuffer.open(path)
    assert [i["seed"] for i in buf.episode_infos()] == [0, 1, 2]


def test_failed_expert_episodes_are_discarded_and_counted(tmp_path, monkeypatch):
    real = collect.run_episode

    def odd_seeds_fail(env, expert, seed):
        steps, info = real(env, expert, seed)
        return steps, {**info, "success": info["success"] and seed % 2 == 0}

    monkeypatch.setattr(collect, "run_episode", odd_seeds_fail)
    collect.main(cfg(tmp_path / "d.zarr", n=2))
    buf = ReplayBuffer.open(tmp_path / "d.zarr")
    assert [i["seed"] for i in buf.episode_infos()] == [0, 2]
    assert buf.root.attrs["collect"]["n_discarded"] == 1


@pytest.mark.parametrize("field,value", [("n_episodes", 0), ("obs_mode", "pixels"), ("seed_start", -1)])
def test_bad_config_rejected_before_writing(tmp_path, field, value):
    c = cfg(tmp_path / "d.zarr")
    c.data[field] = value
    with pytest.raises(RealgapError, match=f"data.{field}"):
        collect.main(c)
    assert not (tmp_path / "d.zarr").exists()
