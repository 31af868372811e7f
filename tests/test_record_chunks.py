"""``suite.record_chunks`` end to end with the shipped checkpoint: what ``data/chunks`` holds.

Row t of an episode holds the K chunks sampled when the policy replanned at step t (NaN elsewhere);
sample 0's executed prefix ``pred[To-1 : To-1+Ta]`` is what ``data/action`` holds on the next Ta rows;
and each stored chunk set is the one sampled from that episode's own observation history (re-sampling
it offline from the stored observations gives it back). Groups whose episodes end at different steps
(target_lab has one that times out) exercise the slot bookkeeping when envs drop out of a batch.
With ``record_chunks=false``, or a policy that samples no chunks (the scripted expert), there is no
``data/chunks`` at all.
"""

from pathlib import Path

import numpy as np
import pytest
from test_data_fakes import one_torch_thread  # noqa: F401

import realgap
from realgap.cli import main
from realgap.data.replay_buffer import ReplayBuffer
from realgap.policies.checkpoint import load_diffusion
from realgap.policies.executor import sample_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = 3
CKPT = Path(realgap.__file__).parent / "checkpoints" / "state_policy"
BASE = ["executor=inline", "suite.record_frames=none", "report.enabled=false", "suite.batch_envs=4"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    on, off, expert = root / "on", root / "off", root / "expert"
    assert main(["suite", f"out={on}", *BASE, "conditions=[nominal,target_lab]", "suite.seeds.n=4",
                 "suite.env.kwargs.max_episode_steps=40",
                 "suite.record_chunks=true", f"+suite.policy.kwargs.num_samples={K}"]) == 0
    assert main(["suite", f"out={off}", *BASE, "conditions=[nominal]", "suite.seeds.n=2",
                 "suite.env.kwargs.max_episode_steps=12", "suite.record_chunks=false"]) == 0
    assert main(["suite", f"out={expert}", *BASE, "conditions=[nominal]", "suite.seeds.n=2", "suite.policy.spec=expert",
                 "suite.env.kwargs.max_episode_steps=12", "suite.record_chunks=true"]) == 0
    return tuple(ReplayBuffer.open(p / "episodes.zarr") for p in (on, off, expert))


@pytest.fixture(scope="module")
def model():
    return load_diffusion(CKPT)


def _episodes(store):
    for i in range(store.n_episodes):
        yield store.episode_info(i), store.episode(i)


def test_chunks_sit_on_replan_rows_and_are_nan_elsewhere(stores, model):
    store, *_ = stores
    chunks = store.root["data"]["chunks"]
    assert chunks.dtype == np.float32 and chunks.shape == (store.n_steps, K, model.horizon, 4)
    lengths = set()
    for info, ep in _episodes(store):
        n, ta = info["length"], model.n_action_steps
        lengths.add((info["group"], n))
        assert len(ep["chunks"]) == n + 1  # T actions + the final observation row
        finite = np.isfinite(ep["chunks"]).reshape(n + 1, -1)
        replan = np.flatnonzero(finite.all(axis=1))
        assert replan.tolist() == list(range(0, n, ta)), info["seed"]  # every Ta steps, from step 0
        assert not finite[np.setdiff1d(np.arange(n + 1), replan)].any()  # every other row all NaN
        assert "chunks" not in info  # arrays live in the store, not in the JSON info
    # Within a group, episodes ended at different steps: later replans ran on a shrunken batch.
    per_group = {g: {n for gg, n in lengths if gg == g} for g, _ in lengths}
    assert any(len(ns) > 1 for ns in per_group.values())


def test_sample_zero_prefix_is_what_the_env_was_sent(stores, model):
    store, *_ = stores
    start, ta = model.n_obs_steps - 1, model.n_action_steps
    for info, ep in _episodes(store):
        n = info["length"]
        for t in range(0, n, ta):
            m = min(ta, n - t)  # an episode can end inside a chunk
            executed = np.clip(ep["chunks"][t, 0, start:start + m], -1, 1)
            np.testing.assert_allclose(ep["action"][t:t + m], executed, atol=1e-6, err_msg=f"seed {info['seed']} step {t}")
        assert np.isnan(ep["action"][n]).all()


def test_stored_chunks_are_those_sampled_from_the_episodes_own_history(stores, model):
    """Re-sampling each replan offline (stored noisy observations, episode seed, replan index) gives the
    stored K chunks back; a chunk filed under another slot or step would not match."""
    store, *_ = stores
    for info, ep in _episodes(store):
        steps = list(range(0, info["length"], model.n_action_steps))
        again = sample_at(model, ep, info["instruction"], steps, info["seed"], K)
        np.testing.assert_allclose(ep["chunks"][steps], again, atol=1e-5, err_msg=f"{info['condition']} {info['seed']}")
        assert not np.allclose(again[:, 0], again[:, 1])  # the K samples are distinct draws


def test_nothing_is_stored_without_record_chunks_or_without_chunks(stores):
    _, off, expert = stores  # record_chunks=false; a policy that samples no chunks (the scripted expert)
    for store in (off, expert):
        assert store.n_episodes == 2 and "action" in store.keys
        assert "chunks" not in store.keys and "chunks" not in store.root["data"]


@pytest.fixture(scope="module")
def medoid_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("chunks_medoid") / "medoid"
    assert main(["suite", f"out={out}", *BASE, "conditions=[nominal,target_lab]", "suite.seeds.n=4",
                 "suite.env.kwargs.max_episode_steps=40", "suite.record_chunks=true",
                 f"+suite.policy.kwargs.num_samples={K}", "+suite.policy.kwargs.chunk_choice=medoid"]) == 0
    return ReplayBuffer.open(out / "episodes.zarr")


def test_medoid_execution_keeps_sample_zero_the_executed_chunk(medoid_store, model):
    """With chunk_choice=medoid the stored chunk sets are reordered so that sample 0 is still what the env was
    sent (uncertainty scores rely on it), and offline re-sampling with the same choice gives them back."""
    start, ta = model.n_obs_steps - 1, model.n_action_steps
    reordered = 0
    for info, ep in _episodes(medoid_store):
        n = info["length"]
        steps = list(range(0, n, ta))
        for t in steps:
            m = min(ta, n - t)
            np.testing.assert_allclose(ep["action"][t:t + m], np.clip(ep["chunks"][t, 0, start:start + m], -1, 1), atol=1e-6)
        again = sample_at(model, ep, info["instruction"], steps, info["seed"], K, chunk_choice="medoid")
        np.testing.assert_allclose(ep["chunks"][steps], again, atol=1e-5, err_msg=f"{info['condition']} {info['seed']}")
        raw = sample_at(model, ep, info["instruction"], steps, info["seed"], K)
        reordered += int(sum(not np.allclose(a[0], r[0]) for a, r in zip(again, raw)))
    assert reordered > 0  # the medoid was not always raw sample 0: the reordering was exercised
