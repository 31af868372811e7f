"""realgap compare: two suites paired per condition; the executor's medoid chunk choice."""

import json
from pathlib import Path

import numpy as np
import pytest

from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError
from realgap.evaluation.compare import compare_suites


def _suite(folder: Path, outcomes: dict[str, list[int]], seeds_from: int = 100, noise: float = 0.0) -> Path:
    """A suite output as the suite writes it: episodes.zarr plus suite.json with the conditions' definitions."""
    buf = ReplayBuffer.create(folder / "episodes.zarr")
    buf.append_episodes([({"action": np.zeros((1, 4), np.float32)},
                          {"condition": c, "seed": seeds_from + j, "success": bool(s), "termination_reason": "x", "length": 1})
                         for c, succ in outcomes.items() for j, s in enumerate(succ)])
    conditions = [[c, {"name": c, "axes": {"sensing": {"enabled": c != "nominal", "obs_noise_std": noise}}}] for c in outcomes]
    (folder / "suite.json").write_text(json.dumps({"digest": "x", "suite": {}, "fingerprint": {
        "conditions": conditions, "env": {"id": "realgap/PlaceInReceptacle-v0"}}}))
    return folder


def test_compare_pairs_by_seed_and_counts_discordant_pairs(tmp_path):
    a = _suite(tmp_path / "a", {"nominal": [1] * 30 + [0] * 20, "noisy": [0] * 50})
    b = _suite(tmp_path / "b", {"nominal": [1] * 45 + [0] * 5, "other": [1] * 50})
    rows = compare_suites(a, b, n_boot=2000)
    assert [r["condition"] for r in rows] == ["nominal"]  # only conditions both suites ran
    r = rows[0]
    assert (r["n_pairs"], r["a_successes"], r["b_successes"], r["only_a"], r["only_b"]) == (50, 30, 45, 0, 15)
    assert r["difference"] == pytest.approx(0.30)
    assert 0.15 < r["diff_low"] < 0.30 < r["diff_high"] < 0.45
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 15)  # exact McNemar, 15 vs 0 discordant
    assert r["a_low"] < 0.6 < r["a_high"]  # Wilson interval around 30/50
    # the same successes on other seeds are not pairs of these: a shifted seed range shares no seed
    c = _suite(tmp_path / "c", {"nominal": [1] * 50}, seeds_from=900)
    with pytest.raises(RealgapError, match="no common seed"):
        compare_suites(a, c)


def test_compare_refuses_a_condition_defined_differently(tmp_path):
    a = _suite(tmp_path / "a", {"noisy": [1, 0, 1]}, noise=0.01)
    b = _suite(tmp_path / "b", {"noisy": [1, 1, 1]}, noise=0.02)
    with pytest.raises(RealgapError, match="'noisy': defined differently"):
        compare_suites(a, b)


def test_compare_cli_writes_json_and_never_overwrites(tmp_path, capsys):
    from realgap.cli import main

    a = _suite(tmp_path / "a", {"nominal": [1, 0, 1, 0]})
    b = _suite(tmp_path / "b", {"nominal": [1, 1, 1, 0]})
    out = tmp_path / "cmp"
    assert main(["compare", f"a={a}", f"b={b}", f"out={out}", "bootstrap_n=200"]) == 0
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert rows[0]["only_b"] == 1 and rows[0]["only_a"] == 0
    assert "nominal" in capsys.readouterr().out
    before = (out / "compare.json").read_text()
    capsys.readouterr()
    assert main(["compare", f"a={b}", f"b={a}", f"out={out}", "bootstrap_n=200"]) != 0
    assert (out / "compare.json").read_text() == before
    assert "out:" in capsys.readouterr().err
    assert main(["compare", f"a={a}"]) != 0
    assert "b: missing" in capsys.readouterr().err


def test_medoid_picks_the_consensus_chunk_not_an_outlier_or_a_mean():
    from realgap.policies.executor import medoid

    rng = np.random.default_rng(0)
    centre = rng.normal(size=(8, 4))
    chunks = np.stack([centre + 0.01 * rng.normal(size=(8, 4)) for _ in range(5)] + [centre + 5.0])
    chunks[[0, 5]] = chunks[[5, 0]]  # the outlier first: sample 0 is what chunk_choice=first executes
    k = medoid(chunks)
    assert k != 0 and np.abs(chunks[k] - centre).max() < 0.05
    # two modes: the medoid is a member of the larger one (never their average)
    modes = np.stack([np.zeros((8, 4))] * 3 + [np.ones((8, 4))] * 2)
    assert medoid(modes) in (0, 1, 2)


def test_executor_executes_the_medoid_chunk_and_rejects_unknown_choices():
    import torch

    from realgap.policies.executor import RecedingHorizonExecutor, medoid

    class Stub(torch.nn.Module):
        """K chunks per observation whose sample 0 is an outlier (its actions 0.9, the others near 0.1)."""
        n_obs_steps, n_action_steps, horizon, state_keys, image_keys = 2, 4, 8, ["proprio"], []

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def sample_chunks(self, batch, num_samples, seed):
            out = np.full((len(seed), num_samples, self.horizon, 4), 0.1, np.float32)
            out[:, 1:] += np.arange(1, num_samples)[None, :, None, None] * 1e-3
            out[:, 0] = 0.9
            return out

    obs = [{"proprio": np.zeros(8, np.float32), "instruction": "place the red block in the yellow rack"}]
    first = RecedingHorizonExecutor(Stub(), num_samples=5)
    first.reset([1])
    assert first.act(obs, [0])[0, 0] == pytest.approx(0.9)
    med = RecedingHorizonExecutor(Stub(), num_samples=5, chunk_choice="medoid")
    med.reset([1])
    a = med.act(obs, [0])[0]
    chunks = med.slot_chunks[0]  # reordered: the executed (medoid) chunk first, the outlier after it
    assert a[0] == pytest.approx(chunks[0, 1, 0]) and a[0] < 0.2 and np.isclose(chunks[1:, 1, 0], 0.9).any()
    assert medoid(chunks[:, 1:5]) == 0
    with pytest.raises(ValueError, match="chunk_choice"):
        RecedingHorizonExecutor(Stub(), chunk_choice="mean")
