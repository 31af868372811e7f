"""``realgap uncertainty`` / ``realgap score`` end to end on a tiny suite with the shipped policy.

The suite records K chunks online (``data/chunks``); offline scoring re-samples them from the stored
observations with simulation switched off and must reproduce the online scores.
"""

import json

import gymnasium
import numpy as np
import pytest

import realgap.envs
from realgap.cli import main
from realgap.data.replay_buffer import ReplayBuffer
from realgap.evaluation import uncertainty as U

K = 4
CAL = ["k=4", "alpha=0.5", "calibration.seeds.n=3", "calibration.executor=inline", "bootstrap_n=50",
       "noise_floor_episodes=1"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("unc") / "suite"
    assert main(["suite", f"out={out}", "conditions=[nominal]", "suite.seeds.n=2", "suite.batch_envs=2",
                 "executor=inline", "suite.record_chunks=true", f"+suite.policy.kwargs.num_samples={K}",
                 "suite.record_frames=none", "report.enabled=false"]) == 0
    assert main(["uncertainty", f"out={out}", *CAL]) == 0
    return out


def _load(path):
    return json.loads(path.read_text())


def test_chunks_are_arrays_in_the_store_on_replan_rows(scored):
    store = ReplayBuffer.open(scored / "episodes.zarr")
    chunks = store.root["data"]["chunks"]
    assert chunks.shape[1:] == (K, 16, 4) and chunks.shape[0] == store.n_steps
    for i in range(store.n_episodes):
        ep = store.episode(i, ["chunks", "action"])
        replan = np.flatnonzero(np.isfinite(ep["chunks"]).all(axis=(1, 2, 3)))
        assert replan[0] == 0 and np.all(np.diff(replan) == 8)  # every n_action_steps
        assert np.isnan(ep["chunks"][np.setdiff1d(np.arange(len(ep["chunks"])), replan)]).all()
        # sample 0 is the executed chunk: pred[To-1 : To-1+Ta] are the actions taken
        np.testing.assert_allclose(ep["action"][replan[0]:replan[0] + 8], np.clip(ep["chunks"][0, 0, 1:9], -1, 1), atol=1e-6)
        assert "chunks" not in store.episode_info(i)


def test_calibration_and_episode_files(scored):
    unc = scored / "uncertainty"
    cal, eps = _load(unc / "calibration.json"), _load(unc / "episodes.json")
    cal_store = ReplayBuffer.open(unc / "calibration" / "episodes.zarr")
    succ = [i for i in cal_store.episode_infos() if i["success"]]
    assert cal["n"] == len(succ) and sorted(cal["calibration_seeds"]) == sorted(i["seed"] for i in succ)
    assert set(cal["calibration_seeds"]).isdisjoint({e["seed"] for e in eps["episodes"]})
    assert cal["rank"] == U.conformal_rank(cal["n"], 0.5) and cal["k_samples"] == K
    assert cal["policy_digest"].startswith("sha256:") and cal["alpha"] == 0.5
    for e in eps["episodes"]:
        trace = [t["score"] for t in e["trace"]]
        assert e["score"] == pytest.approx(max(trace))
        assert e["flagged"] == (e["alarm_step"] is not None) == (e["score"] > eps["threshold"])
        assert e["alarm_step"] == U.alarm_step([t["step"] for t in e["trace"]], trace, eps["threshold"])
        assert e["chunks_source"] == "stored" and set(e["scores"]) == set(U.ALL_SCORES)
    metrics = _load(unc / "metrics.json")
    assert metrics["false_alarm"]["bound"] == pytest.approx(0.5 + 1 / (cal["n"] + 1))
    assert (unc / "index.html").read_text().count("Realised false-alarm rate") == 1


def test_offline_scoring_without_simulation_reproduces_online_scores(scored, monkeypatch, tmp_path):
    def no_sim(*a, **k):
        raise AssertionError("offline scoring must not simulate")

    monkeypatch.setattr(gymnasium, "make", no_sim)
    monkeypatch.setattr(realgap.envs, "make", no_sim)
    out = tmp_path / "offline"
    assert main(["score", "--episodes", str(scored / "episodes.zarr"), "--policy", "checkpoints/state_policy",
                 f"out={out}"]) == 0
    online = _load(scored / "uncertainty" / "episodes.json")["episodes"]
    offline = _load(out / "uncertainty" / "episodes.json")["episodes"]
    assert [e["episode"] for e in online] == [e["episode"] for e in offline]
    for a, b in zip(online, offline):
        assert b["chunks_source"] == "resampled"
        assert [t["step"] for t in a["trace"]] == [t["step"] for t in b["trace"]]
        np.testing.assert_allclose([t["score"] for t in b["trace"]], [t["score"] for t in a["trace"]], rtol=1e-4)
        for name in U.ALL_SCORES:
            assert b["scores"][name] == pytest.approx(a["scores"][name], rel=1e-4, abs=1e-7)
        assert a["flagged"] == b["flagged"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_input_is_one_line(scored, capsys, tmp_path):
    assert "K >= 2" in _error(capsys, ["uncertainty", "--overwrite", f"out={scored}", *CAL, "k=1"])
    assert "outside (0, 1)" in _error(capsys, ["uncertainty", "--overwrite", f"out={scored}", *CAL, "alpha=1.5"])
    assert "1/alpha - 1 = 9" in _error(capsys, ["uncertainty", "--overwrite", f"out={scored}", *CAL, "alpha=0.1"])
    assert "overlap" in _error(capsys, ["uncertainty", "--overwrite", f"out={scored}", *CAL, "calibration.seeds.start=100001"])
    assert "exists" in _error(capsys, ["uncertainty", f"out={scored}", *CAL])
    assert (scored / "uncertainty" / "episodes.json").exists()  # refused runs wrote nothing, removed nothing

    # a store without an observation key the policy needs
    src = ReplayBuffer.open(scored / "episodes.zarr")
    lacking = ReplayBuffer.create(tmp_path / "lacking.zarr")
    lacking.append_episode({k: v for k, v in src.episode(0).items() if k in ("proprio", "action")}, src.episode_info(0))
    cal = scored / "uncertainty" / "calibration.json"
    err = _error(capsys, ["score", "--episodes", str(tmp_path / "lacking.zarr"), "--policy", "checkpoints/state_policy",
                          f"--calibration={cal}", f"out={tmp_path / 'o1'}"])
    assert "object_state" in err and "lacks" in err

    # a threshold computed for another policy
    other = json.loads(cal.read_text())
    other["policy_digest"] = "sha256:" + "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    err = _error(capsys, ["score", "--episodes", str(scored / "episodes.zarr"), "--policy", "checkpoints/state_policy",
                          f"--calibration={tmp_path / 'other.json'}", f"out={tmp_path / 'o2'}"])
    assert "another policy" in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_image_policy_calibration_keeps_frames_for_scoring(tmp_path):
    """Scoring re-encodes observations: the shipped image policy's calibration suite must store its frames
    (it crashed with a KeyError on data/image_front before)."""
    out = tmp_path / "image"
    assert main(["suite", "suite=image", f"out={out}", "conditions=[nominal]", "suite.seeds.n=2", "suite.batch_envs=2",
                 "executor=inline", "suite.record_chunks=true", f"++suite.policy.kwargs.num_samples={K}",
                 "suite.record_frames=all", "report.enabled=false"]) == 0
    assert main(["uncertainty", f"out={out}", *CAL]) == 0
    cal = ReplayBuffer.open(out / "uncertainty" / "calibration" / "episodes.zarr", mode="r")
    assert "image_front" in cal.keys and "chunks" in cal.keys
    assert _load(out / "uncertainty" / "calibration.json")["n"] >= 1


def test_a_medoid_suite_is_calibrated_with_its_own_k(tmp_path, capsys):
    """Under chunk_choice=medoid the executed chunk depends on K: calibrating with another K would calibrate
    another execution, so it is refused before anything runs; with the suite's K it runs and records the choice."""
    out = tmp_path / "medoid"
    assert main(["suite", f"out={out}", "conditions=[nominal]", "suite.seeds.n=2", "suite.batch_envs=2",
                 "executor=inline", "suite.record_chunks=true", f"+suite.policy.kwargs.num_samples={K}",
                 "+suite.policy.kwargs.chunk_choice=medoid", "suite.record_frames=none", "report.enabled=false"]) == 0
    capsys.readouterr()  # the suite's progress bar
    err = _error(capsys, ["uncertainty", f"out={out}", *CAL, "k=3"])
    assert "k:" in err and f"k={K}" in err and not (out / "uncertainty").exists()
    assert main(["uncertainty", f"out={out}", *CAL]) == 0
    assert _load(out / "uncertainty" / "calibration.json")["chunk_choice"] == "medoid"
