"""A tiny scored suite folder for the review-queue tests: a real episode store, hand-written scores.

No policy and no simulation: the store is written with the project's ReplayBuffer in the suite's
layout (frames of failures, ``data/chunks`` NaN except at replans), and ``uncertainty/episodes.json``
follows the schema of ``realgap.evaluation.uncertainty``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import numpy as np

from realgap.data.replay_buffer import ReplayBuffer

K, HORIZON, REPLAN_EVERY = 4, 6, 3
IMAGE = 16


def frame_colour(episode: int, t: int) -> np.ndarray:
    """A frame that encodes (episode, step), so a test can tell which one it got back."""
    img = np.zeros((IMAGE, IMAGE, 3), np.uint8)
    img[..., 0] = 10 * episode
    img[..., 1] = t
    img[: IMAGE // 2, :, 2] = 255
    return img


def make_suite(root: Path, n: int = 10, flagged: tuple[int, ...] = (1, 3, 4), chunks: bool = True,
               frames: bool = True) -> Path:
    """``root`` becomes a suite folder with ``n`` episodes; episodes in ``flagged`` are flagged.

    Episode i has length 6 + i, fails when i is odd (frames kept for failures only), score 0.1 * i.
    """
    root.mkdir(parents=True)
    store = ReplayBuffer.create(root / "episodes.zarr")
    scored = []
    rng = np.random.default_rng(0)
    for i in range(n):
        length = 6 + i
        rows = length + 1
        success = i % 2 == 0
        steps = {
            "action": np.concatenate([rng.uniform(-1, 1, (length, 4)), np.full((1, 4), np.nan)]).astype(np.float32),
            "proprio": rng.normal(size=(rows, 8)).astype(np.float32),
        }
        if frames:
            keep = not success
            steps["image_front"] = np.stack([frame_colour(i, t) if keep else np.zeros((IMAGE, IMAGE, 3), np.uint8)
                                             for t in range(rows)])
        if chunks:
            c = np.full((rows, K, HORIZON, 4), np.nan, np.float32)
            for t in range(0, length, REPLAN_EVERY):
                c[t] = rng.uniform(-1, 1, (K, HORIZON, 4))
            steps["chunks"] = c
        info = {
            "condition": "nominal" if i < n // 2 else "target_lab", "seed": 100 + i, "group": 0,
            "success": success, "length": length, "termination_reason": "success" if success else "timeout",
            "error": "", "wall_time_s": 0.1, "frames": frames and not success,
            "task": {"instruction": f"place the red block in the yellow rack #{i}", "target_object": "red block"},
            "dr_params": {"physics": {"friction": 0.5 + 0.01 * i}},
        }
        store.append_episode(steps, info)
        trace = [{"step": t, "score": round(0.1 * i * (t + 1) / length, 4)} for t in range(0, length, REPLAN_EVERY)]
        is_flagged = i in flagged
        scored.append({
            "episode": i, "condition": info["condition"], "seed": info["seed"], "success": success,
            "termination_reason": info["termination_reason"], "length": length,
            "failure_step": None if success else length, "score": round(0.1 * i, 4),
            "scores": {"total_var": round(0.1 * i, 4)}, "trace": trace,
            "alarm_step": trace[-1]["step"] if is_flagged else None, "flagged": is_flagged,
        })
    (root / "suite.json").write_text(json.dumps({"suite": {"name": "fake-review"}}))
    unc = root / "uncertainty"
    unc.mkdir()
    (unc / "episodes.json").write_text(json.dumps({
        "schema": "realgap.uncertainty/1", "store": str(root / "episodes.zarr"), "score": "total_var",
        "threshold": 0.05, "alpha": 0.1, "k_samples": K, "n_obs_steps": 2, "n_action_steps": 3, "episodes": scored}))
    (unc / "calibration.json").write_text(json.dumps({
        "schema": "realgap.uncertainty/1", "score": "total_var", "aggregate": "max", "threshold": 0.05,
        "alpha": 0.1, "n": 19, "rank": 18, "k_samples": K, "calibration_seeds": list(range(19)),
        "policy": "fake", "policy_digest": "sha256:0"}))
    return root


@contextlib.contextmanager
def serving(out: Path, **options):
    """A review server for ``out`` on a free loopback port, in a thread; yields (app, base_url)."""
    from realgap.evaluation.review import ReviewApp, make_server

    app = ReviewApp(out, options)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def hammer_verdicts(out: Path, parity: int, rounds: int, go=None) -> int:
    """Record verdicts for the queued episodes of one parity, ``rounds`` times each; after every record,
    check that none of this writer's earlier verdicts was lost. Returns how many were lost.

    Two writers on the same folder (threads or processes) touch disjoint episodes, so any verdict of
    this writer that changes under it is a lost update: another writer wrote back a stale file.
    """
    from realgap.evaluation.review import ReviewApp, VerdictStore

    app = ReviewApp(out, {"n_unflagged": 1000})
    store = VerdictStore(app.verdicts.path, app.by_episode)
    mine = sorted(app.by_episode)[parity::2]
    if go is not None:
        go()
    last: dict[int, str] = {}
    lost = 0
    for r in range(rounds):
        for ep in mine:
            last[ep] = f"writer {parity} round {r}"
            store.record({"episode": ep, "verdict": "benign", "note": last[ep]})
            now = store.load()
            lost += sum(now.get(e, {}).get("note") != note for e, note in last.items())
    return lost
