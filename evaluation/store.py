"""A suite's output folder: its config, its episode store, and the resume bookkeeping.

    <out>/suite.json      the suite config and the plan fingerprint (checked on --resume)
    <out>/episodes.zarr   the episode store (``realgap.data.replay_buffer.ReplayBuffer`` layout)
    <out>/report/         derived: HTML, JSON, CSV, videos (rebuilt by ``realgap report``)

Episodes are appended by the main process as groups finish; the buffer commits each group
atomically, so after a kill the store holds complete episodes only. On resume a group with any
missing episode is rerun in full (same composition, same results) and only the missing ones are appended.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError
from realgap.outputs import claim_output

from .plan import Plan, digest
from .rollout import Episode

SUITE_FILE = "suite.json"
STORE_DIR = "episodes.zarr"


def check_output(out: Path, resume: bool, overwrite: bool, plan: Plan | None = None) -> str:
    """``realgap.outputs.claim_output`` for a suite folder; with ``plan``, a resume is also checked against the
    saved fingerprint here, before any simulation."""
    mode = claim_output(out, resume, overwrite, marker=SUITE_FILE, what="suite output")
    if mode == "resume" and plan is not None:
        check_fingerprint(out, plan)
    return mode


def check_fingerprint(out: Path, plan: Plan) -> None:
    """A resumed suite must be the saved one: same conditions, seeds, env, and the same policy."""
    path = out / SUITE_FILE
    fingerprint = json.loads(json.dumps(plan.fingerprint(), default=str))
    try:
        old = json.loads(path.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RealgapError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    if old != fingerprint:
        raise RealgapError(f"{path}: the suite differs from the one being resumed (field '{_diff_field(old, fingerprint)}')")


def _diff_field(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _diff_field(a, b, f"{prefix}{key}.")
            return f"{prefix}{key}"
    return prefix.rstrip(".")


def open_output(out: Path, mode: str, plan: Plan, suite_cfg: dict) -> ReplayBuffer:
    """Create (new/overwrite) or reopen (resume) the output folder and its episode store."""
    fingerprint = json.loads(json.dumps(plan.fingerprint(), default=str))
    if mode == "resume":
        check_fingerprint(out, plan)
        store_path = out / STORE_DIR
        if not store_path.exists():  # killed between writing suite.json and creating the store
            return ReplayBuffer.create(store_path)
        store = open_store(store_path, mode="a")
        store.verify()  # a damaged chunk must not be resumed around (zarr would read it as zeros)
        check_store(store, plan)
        return store
    if mode == "overwrite":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"suite": suite_cfg, "fingerprint": fingerprint, "digest": digest(fingerprint)}
    tmp = out / f"{SUITE_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out / SUITE_FILE)
    return ReplayBuffer.create(out / STORE_DIR)


def open_store(path: Path, mode: str = "r") -> ReplayBuffer:
    """Open an episode store; any damage (even one zarr does not name) becomes a one-line error."""
    try:
        return ReplayBuffer.open(path, mode=mode)
    except RealgapError:
        raise
    except Exception as e:
        raise RealgapError(f"{path}: corrupt episode store ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def suite_outcomes(folder: str | Path) -> dict[str, dict[int, bool]]:
    """{condition: {episode seed: success}} of a suite output folder's episode store."""
    store_path = Path(folder) / STORE_DIR
    if not store_path.exists():
        raise RealgapError(f"{store_path}: not found (run the suite first)")
    out: dict[str, dict[int, bool]] = {}
    for info in open_store(store_path, mode="r").episode_infos():
        out.setdefault(str(info["condition"]), {})[int(info["seed"])] = bool(info["success"])
    return out


def store_path_of(out: Path) -> Path:
    """The episode store of a suite output folder, or ``out`` itself when it is a store (demos)."""
    out = Path(out).expanduser()
    if (out / STORE_DIR).exists():
        return out / STORE_DIR
    if (out / "zarr.json").exists():
        return out
    raise RealgapError(f"out: {out} holds no episode store (no {STORE_DIR}, no zarr.json)")


def verify_main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    """``realgap verify out=<suite output or zarr store>``: read everything, name the first bad array."""
    if resume or overwrite:
        raise RealgapError("verify writes nothing: --resume/--overwrite do not apply")
    if not cfg.get("out"):
        raise RealgapError("out: missing (a suite output folder or a zarr store)")
    out = Path(str(cfg["out"])).expanduser()
    suite_file = out / SUITE_FILE
    if suite_file.exists():
        try:
            json.loads(suite_file.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RealgapError(f"{suite_file}: unreadable ({type(e).__name__}: {e})") from e
    path = store_path_of(out)
    store = open_store(path, mode="r")
    chunks = store.verify(progress=bool(cfg.get("progress", True)))
    print(f"{path}: ok ({store.n_episodes} episodes, {store.n_steps} steps, {len(store.keys)} data arrays, "
          f"{chunks} chunks checked)")
    if store.unchecksummed:
        print(f"{path}: note: {len(store.unchecksummed)} arrays were written without checksums (layout 1: "
              f"{', '.join(store.unchecksummed[:3])}{', ...' if len(store.unchecksummed) > 3 else ''}); "
              "a missing chunk there reads as zeros and cannot be detected")
    return 0


def check_store(store: ReplayBuffer, plan: Plan) -> None:
    """A store being resumed must hold only planned, distinct episodes."""
    try:
        infos = store.episode_infos()
    except (ValueError, KeyError) as e:
        raise RealgapError(f"{store.path}: unreadable episode_info ({type(e).__name__}: {e})") from e
    planned = {(c.name, s) for c in plan.conditions for s in plan.seeds}
    keys = []
    for i, info in enumerate(infos):
        if not isinstance(info, dict) or "condition" not in info or "seed" not in info:
            raise RealgapError(f"{store.path}: episode {i} has no condition/seed in its info")
        keys.append((info["condition"], info["seed"]))
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise RealgapError(f"{store.path}: episode {dup[0]} is stored twice")
    extra = [k for k in keys if k not in planned]
    if extra:
        raise RealgapError(f"{store.path}: episode {extra[0]} is not part of this suite")


def done_episodes(store: ReplayBuffer) -> set[tuple[str, int]]:
    return {(i["condition"], int(i["seed"])) for i in store.episode_infos()}


class EpisodeWriter:
    """Appends episodes to the store, padding dropped frames with zeros so every key has every step."""

    def __init__(self, store: ReplayBuffer, frame_specs: dict[str, tuple[tuple, str]]):
        self.store = store
        self.frame_specs = frame_specs  # image key -> (shape, dtype)

    def append(self, episodes: list[Episode]) -> list[int]:
        """Append a finished group's episodes under one commit."""
        batch = []
        chunk_shape = self._chunk_shape(episodes)
        for episode in episodes:
            steps = dict(episode.steps)
            rows = len(steps["action"])
            for key, (shape, dtype) in self.frame_specs.items():
                if key not in steps:
                    steps[key] = np.zeros((rows, *shape), dtype)
            if chunk_shape is not None and "chunks" not in steps:  # an episode that never replanned
                steps["chunks"] = np.full((rows, *chunk_shape), np.nan, np.float32)
            batch.append((steps, episode.info))
        return self.store.append_episodes(batch)

    def _chunk_shape(self, episodes: list[Episode]) -> tuple | None:
        """(K, horizon, action_dim) of ``data/chunks`` when the store or this group records chunks."""
        if "chunks" in self.store.keys:
            return tuple(self.store.root["data"]["chunks"].shape[1:])
        return next((tuple(e.steps["chunks"].shape[1:]) for e in episodes if "chunks" in e.steps), None)
