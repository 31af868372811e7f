"""A row never present in training (a held-out catalogue item) is normalised like the trained rows of
its own kind: a held-out receptacle like the trained receptacles, a held-out object like the objects.

Pooling over all seen rows read the held-out blue cup like an object (its constant z=0 became -1 and
its y was scaled by the objects' span), and the shipped state policy scored 0/30 on every blue-cup
grounding variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realgap.data.normalizer import Normalizer
from realgap.errors import RealgapError
from realgap.policies.train import row_kinds

KINDS = ["object", "object", "receptacle", "receptacle"]  # rows: trained, held out, trained, held out
CHECKPOINT = Path(__file__).resolve().parents[1] / "realgap" / "checkpoints" / "state_policy"


def _demo_rows(n: int = 3000, seed: int = 0) -> np.ndarray:
    """[present, x, y, z, cos, sin] x 4: objects move in x, y, z (lifted); receptacles only in x, y
    (z stays 0, no yaw); rows 1 and 3 are never present."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 4, 6), np.float32)
    yaw = rng.uniform(-np.pi, np.pi, n)
    rows[:, 0] = np.stack([np.ones(n), rng.uniform(0.3, 0.7, n), rng.uniform(-0.3, 0.3, n),
                           rng.uniform(0.02, 0.2, n), np.cos(yaw), np.sin(yaw)], 1)
    rows[:, 2] = np.stack([np.ones(n), rng.uniform(0.45, 0.6, n), rng.uniform(-0.1, 0.1, n),
                           np.zeros(n), np.ones(n), np.zeros(n)], 1)
    return rows.reshape(n, -1)


def _as_row(values, row: int) -> np.ndarray:
    x = np.zeros((1, 24), np.float32)
    x[0, row * 6:(row + 1) * 6] = values
    return x


def test_held_out_rows_read_like_trained_rows_of_their_kind():
    x = _demo_rows()
    norm = Normalizer.fit({"s": x}, rows={"s": 6}, row_kinds={"s": KINDS})
    np.testing.assert_array_equal(norm.normalize("s", x), Normalizer.fit({"s": x}).normalize("s", x))
    rec = np.array([1, 0.5, 0.1, 0.0, 1.0, 0.0], np.float32)  # a receptacle standing at (0.5, 0.1)
    trained, held = norm.normalize("s", _as_row(rec, 2))[0, 12:18], norm.normalize("s", _as_row(rec, 3))[0, 18:]
    np.testing.assert_allclose(held, trained, rtol=1e-6, atol=1e-7)
    assert held[3] == 0.0  # z of a receptacle passes through, as for the trained ones (objects: -1)
    obj = np.array([1, 0.5, 0.1, 0.05, 0.6, 0.8], np.float32)
    trained, held = norm.normalize("s", _as_row(obj, 0))[0, :6], norm.normalize("s", _as_row(obj, 1))[0, 6:12]
    np.testing.assert_allclose(held, trained, rtol=1e-6, atol=1e-7)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.normalize("s", _as_row(rec, 3)), norm.normalize("s", _as_row(rec, 3)))


def test_row_kinds_must_name_every_row():
    with pytest.raises(RealgapError, match="row_kinds.s"):
        Normalizer.fit({"s": _demo_rows(50)}, rows={"s": 6}, row_kinds={"s": KINDS[:3]})


def test_training_passes_the_catalogue_kind_of_each_row():
    kinds = row_kinds({"row_attention": {"key": "object_state", "row_dim": 6}})["object_state"]
    assert kinds == ["object"] * 6 + ["receptacle"] * 5  # catalogue order: 6 objects, then 5 receptacles
    assert row_kinds({"row_attention": {"key": None}}) == {}


def test_shipped_state_policy_reads_the_blue_cup_like_a_trained_receptacle():
    d = json.loads((CHECKPOINT / "policy.json").read_text())
    names = d["config"]["row_attention"]["row_names"]
    norm = Normalizer.from_dict(d["normalizer"])
    rec = np.array([1, 0.0, 0.1, 0.0, 1.0, 0.0], np.float32)  # standing upright at (0, 0.1)
    j = names.index("blue cup")
    cup = norm.normalize("object_state", _rows_at(rec, j, len(names)))[0, j * 6:(j + 1) * 6]
    for trained in ("yellow rack", "grey bowl", "pink tray", "white crate"):
        i = names.index(trained)
        ref = norm.normalize("object_state", _rows_at(rec, i, len(names)))[0, i * 6:(i + 1) * 6]
        # pooled over all rows the cup read z=0 as -1 and y as 0.45 (trained receptacles: 0 and 0.59)
        np.testing.assert_allclose(cup, ref, atol=0.05, err_msg=trained)


def _rows_at(values, row: int, n_rows: int) -> np.ndarray:
    x = np.zeros((1, n_rows * 6), np.float32)
    x[0, row * 6:(row + 1) * 6] = values
    return x
