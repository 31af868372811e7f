"""Analysis of a ``realgap ablate`` study: pure functions from episode stores + the study manifest.

Nothing here simulates. ``analyze(out)`` reads ``<out>/manifest.json`` (written by
``evaluation/ablation_run.py``) and each job's episode store, and returns every number of the report;
``build_report(out)`` writes ``<out>/report/ablation.json`` and ``index.html``.

- **Attribution**: effect(a) = target success(pi_all) - target success(pi_-a); CI from the two-level
  bootstrap (training seeds, then episode seeds; ``stats.hierarchical_paired_effect``); verdict by TOST
  against the margin (``stats.tost_verdict``).
- **Strength sweep**: target / nominal success per scale of the sweep axis.
- **Evaluation-time sensitivity** and the **target breakdown**: paired comparisons against nominal.
- **Sim vs target**: Pearson r and MMRV over the trained policies (``stats.sim_real_agreement``).
- **Sequential**: the group-sequential test per comparison against the fixed-N design.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from realgap.errors import RealgapError

from . import stats


# ------------------------------------------------------------------------------------ demo digest
def training_data_digest(path: str | Path) -> str:
    """sha256 of everything training reads from a demo store: every ``data/<key>`` array (dtype, shape,
    bytes), ``episode_ends``, each episode's instruction and the recorded observation-noise std (the
    normalizer's input, ``realgap.data.dataset.recorded_obs_noise``). Episode DR parameters of axes
    the policy never observes are not read by training, so they are not part of it."""
    from realgap.data.dataset import recorded_obs_noise
    from realgap.data.replay_buffer import ReplayBuffer

    buf = ReplayBuffer.open(path, mode="r")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(buf.episode_ends).tobytes())
    for key in buf.keys:
        arr = np.ascontiguousarray(buf.array(key))
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    infos = buf.episode_infos()
    h.update(json.dumps([str(i.get("instruction", "")) for i in infos]).encode())
    h.update(repr(recorded_obs_noise(infos)).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ loading
def load_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RealgapError(f"{path}: missing or unreadable (run `realgap ablate` first)") from e


def suite_outcomes(folder: str | Path) -> dict[str, dict[int, bool]]:
    """{condition: {episode seed: success}} of a suite output folder's episode store."""
    from .store import STORE_DIR, open_store

    store = open_store(Path(folder) / STORE_DIR, mode="r")
    out: dict[str, dict[int, bool]] = {}
    for info in store.episode_infos():
        out.setdefault(info["condition"], {})[int(info["seed"])] = bool(info["success"])
    return out


def outcome_matrix(runs: list[dict[int, bool]], seeds: list[int]) -> np.ndarray:
    """(runs, seeds) 0/1 matrix over the seeds every run holds."""
    return np.array([[float(r[s]) for s in seeds] for r in runs])


def shared_seeds(runs: list[dict[int, bool]]) -> list[int]:
    common = set(runs[0]) if runs else set()
    for r in runs[1:]:
        common &= set(r)
    return sorted(common)
