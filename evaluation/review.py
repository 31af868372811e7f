"""``realgap review out=<suite>``: a local review queue for a scored suite.

    realgap review out=outputs/suite/default                         # serve http://127.0.0.1:8765/
    realgap review out=outputs/suite/default review.port=0           # any free port (printed)
    realgap review out=outputs/suite/default review.export=v.csv     # write the verdicts as CSV and exit

It reads ``<out>/uncertainty/episodes.json`` and ``calibration.json`` (written by ``realgap
uncertainty`` / ``realgap score``, schema in :mod:`realgap.evaluation.uncertainty`) and the episode
store ``<out>/episodes.zarr`` (read-only: frames ``data/image_<cam>``, sampled chunks ``data/chunks``),
or, for a folder written by ``realgap score`` of a logged store, the store that episodes.json names.

The queue: flagged episodes first, by score (highest first), then a seeded random sample of the
unflagged ones, so that the reviewer's verdicts also estimate what the flagger misses.

Verdicts (``real_failure`` | ``benign`` | ``unsure`` + a note) go to ``<out>/review/verdicts.json``
the moment they are made: read-modify-write under a lock (a thread lock for the tabs of one server, an
``flock`` for two servers), written to a temporary file and ``os.replace``-d, so a crash or two tabs
never leave a half-written file. The episode store is never written.

The server is the standard library's ``ThreadingHTTPServer`` (see evaluation/README.md for why). It
binds 127.0.0.1 by default, serves files only from inside the suite folder, answers requests only for
a loopback ``Host`` (no DNS rebinding), accepts verdicts only as ``application/json`` (a cross-site form
cannot post one) and validates each: unknown episode, verdict or field, or a note that is too long -> 400.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from realgap import seeding
from realgap.data.replay_buffer import ReplayBuffer
from realgap.envs import is_image_key
from realgap.errors import RealgapError

from . import stats
from .store import STORE_DIR, SUITE_FILE

try:  # cross-process lock between two servers on one folder (POSIX); threads always lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

VERDICTS = ("real_failure", "benign", "unsure")
UNCERTAINTY_DIR = "uncertainty"
REVIEW_DIR = "review"
VERDICT_FILE = "verdicts.json"
VERDICT_FORMAT = "realgap.review.verdicts/1"
DEFAULTS = {"host": "127.0.0.1", "port": 8765, "n_unflagged": 20, "seed": 0, "export": None,
            "max_note_chars": 2000}
MAX_BODY_BYTES = 64 * 1024  # a verdict is a few hundred bytes; anything larger is refused unread
STATIC = {"index.html": "text/html; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
          "review.css": "text/css; charset=utf-8"}
CSV_FIELDS = ("queue_position", "kind", "episode", "condition", "seed", "success", "termination_reason",
              "flagged", "score", "alarm_step", "verdict", "note", "time")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# /files/ content types; HTML is sent as text so a stored page cannot run script on this origin
FILE_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".png": "image/png", ".gif": "image/gif",
              ".json": "application/json", ".csv": "text/csv", ".txt": "text/plain", ".html": "text/plain"}


class VerdictError(ValueError):
    """A verdict the server refuses (answered with 400 and this message)."""


# ------------------------------------------------------------------------------------------ loading
def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise RealgapError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RealgapError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def _finite(x: Any) -> float | None:
    """A JSON-safe float (NaN/inf -> None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _trace(raw: Any, where: str) -> list[list]:
    """[[step, score], ...] from either [[step, score], ...] or [{"step", "score"}, ...]."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RealgapError(f"{where}.trace: expected a list, got {type(raw).__name__}")
    out = []
    for point in raw:
        if isinstance(point, dict):
            step, score = point.get("step"), point.get("score")
        elif isinstance(point, (list, tuple)) and len(point) == 2:
            step, score = point
        else:
            raise RealgapError(f"{where}.trace: expected [step, score] or {{step, score}}, got {point!r}"[:200])
        if not isinstance(step, int) or isinstance(step, bool):
            raise RealgapError(f"{where}.trace: step {step!r} is not an integer")
        out.append([step, _finite(score)])
    return out


def validate_scored(doc: Any, n_store: int, path: Path) -> dict[int, dict]:
    """episode index -> scored entry, from ``uncertainty/episodes.json`` (a list or {"episodes": [...]})."""
    entries = doc.get("episodes") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise RealgapError(f"{path}: expected a list of episodes (or {{'episodes': [...]}})")
    scored: dict[int, dict] = {}
    for j, e in enumerate(entries):
        where = f"{path}: episodes[{j}]"
        if not isinstance(e, dict):
            raise RealgapError(f"{where}: expected an object")
        idx = e.get("episode")
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n_store:
            raise RealgapError(f"{where}.episode: {idx!r} is not an episode of the store (0..{n_store - 1})")
        if idx in scored:
            raise RealgapError(f"{where}.episode: {idx} appears twice")
        if not isinstance(e.get("flagged"), bool):
            raise RealgapError(f"{where}.flagged: expected true/false, got {e.get('flagged')!r}")
        alarm = e.get("alarm_step")
        if alarm is not None and (not isinstance(alarm, int) or isinstance(alarm, bool)):
            raise RealgapError(f"{where}.alarm_step: expected an integer or null, got {alarm!r}")
        scored[idx] = {
            "episode": idx,
            "condition": e.get("condition"),
            "seed": e.get("seed"),
            "success": e.get("success"),
            "termination_reason": e.get("termination_reason") or "",
            "score": _finite(e.get("score")),
            "flagged": e["flagged"],
            "alarm_step": alarm,
            "failure_step": e.get("failure_step"),
            "trace": _trace(e.get("trace"), where),
        }
    return scored


@dataclass
class Suite:
    """A scored suite folder, opened read-only."""

    out: Path  # resolved
    store: ReplayBuffer
    infos: list[dict]
    scored: dict[int, dict]
    calibration: dict | None
    meta: dict  # episodes.json's top-level fields besides the episode list (threshold, n_obs_steps, ...)
    name: str


def load_suite(out: str | Path) -> Suite:
    """Open ``out`` for review; every problem is a one-line RealgapError naming the file."""
    out = Path(out).expanduser()
    if not out.is_dir():
        raise RealgapError(f"out: {out} is not a folder (a suite output, e.g. outputs/suite/default)")
    out = out.resolve()
    unc = out / UNCERTAINTY_DIR
    doc = _read_json(unc / "episodes.json", f"score the suite first: `realgap uncertainty out={out}`")
    # A suite keeps its store beside uncertainty/; `realgap score` of a logged store names it instead.
    store_path = out / STORE_DIR
    named = doc.get("store") if isinstance(doc, dict) else None
    if not store_path.exists() and isinstance(named, str) and named:
        store_path = (out / named).resolve()  # an absolute path stays as it is
    if not store_path.exists():
        raise RealgapError(f"out: {out / STORE_DIR} does not exist and {unc / 'episodes.json'} names no existing "
                           f"store (run `realgap suite out={out}` first)")
    store = ReplayBuffer.open(store_path, mode="r")
    try:
        infos = store.episode_infos()
    except Exception as e:
        raise RealgapError(f"{store_path}: unreadable episode_info ({type(e).__name__})") from e
    scored = validate_scored(doc, len(infos), unc / "episodes.json")
    if not scored:
        raise RealgapError(f"{unc / 'episodes.json'}: no scored episodes")
    for idx, e in scored.items():  # the indices must refer to this store, not to an older one
        info = infos[idx]
        for key in ("condition", "seed"):
            if e[key] is not None and info.get(key) is not None and e[key] != info.get(key):
                raise RealgapError(f"{unc / 'episodes.json'}: episode {idx} has {key} {e[key]!r} but {store_path} "
                                   f"has {info.get(key)!r} (rescore the suite)")
    calibration = None
    if (unc / "calibration.json").exists():
        calibration = _read_json(unc / "calibration.json", "calibration")
        if not isinstance(calibration, dict):
            raise RealgapError(f"{unc / 'calibration.json'}: expected an object")
    meta = {k: v for k, v in doc.items() if k != "episodes"} if isinstance(doc, dict) else {}
    name = out.name
    with contextlib.suppress(RealgapError):
        name = ((_read_json(out / SUITE_FILE, "suite").get("suite") or {}).get("name")) or name
    return Suite(out, store, infos, scored, calibration, meta, str(name))


# -------------------------------------------------------------------------------------------- queue
def build_queue(scored: dict[int, dict], n_unflagged: int, seed: int) -> list[dict]:
    """Flagged episodes by score (highest first), then a seeded random sample of unflagged ones."""
    flagged = sorted((e for e in scored.values() if e["flagged"]),
                     key=lambda e: (-(e["score"] if e["score"] is not None else -math.inf), e["episode"]))
    unflagged = sorted(e["episode"] for e in scored.values() if not e["flagged"])
    rng = seeding.stream(seed, "review_sample")
    take = min(max(0, n_unflagged), len(unflagged))
    sample = [scored[unflagged[i]] for i in rng.choice(len(unflagged), size=take, replace=False)] if take else []
    keys = ("episode", "condition", "seed", "success", "termination_reason", "score", "flagged", "alarm_step")
    return [{"position": p, "kind": "flagged" if e["flagged"] else "sample", **{k: e[k] for k in keys}}
            for p, e in enumerate(flagged + sample)]


# ----------------------------------------------------------------------------------------- verdicts
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path, threading.Lock())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def validate_verdict(payload: Any, known: dict[int, dict], max_note_chars: int) -> tuple[int, str, str]:
    """(episode, verdict, note) from a posted object, or VerdictError naming the bad field."""
    if not isinstance(payload, dict):
        raise VerdictError("body: expected a JSON object {episode, verdict, note}")
    extra = sorted(set(payload) - {"episode", "verdict", "note"})
    if extra:
        raise VerdictError(f"unknown field(s): {', '.join(map(str, extra))[:100]}")
    episode = payload.get("episode")
    if not isinstance(episode, int) or isinstance(episode, bool) or episode not in known:
        raise VerdictError(f"episode: {str(episode)[:40]!r} is not an episode of this review queue")
    verdict = payload.get("verdict")
    if verdict not in VERDICTS:
        raise VerdictError(f"verdict: {str(verdict)[:40]!r} is not one of {', '.join(VERDICTS)}")
    note = payload.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise VerdictError("note: expected a string")
    if len(note) > max_note_chars:
        raise VerdictError(f"note: {len(note)} characters, at most {max_note_chars}")
    return episode, verdict, note


class VerdictStore:
    """``<out>/review/verdicts.json``: the latest verdict per episode, rewritten atomically per change."""

    def __init__(self, path: Path, known: dict[int, dict], max_note_chars: int = DEFAULTS["max_note_chars"]):
        self.path = Path(path)
        self.known = known  # episode -> queue item (condition, seed, ...)
        self.max_note_chars = int(max_note_chars)
        self._lock = _thread_lock(self.path.resolve())
        self.load()  # a corrupt or foreign file is an error now, not at the first click

    @contextlib.contextmanager
    def _locked(self):
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                yield
                return
            with open(self.path.with_name(f".{self.path.name}.lock"), "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> dict[int, dict]:
        """episode -> {episode, condition, seed, verdict, note, time}; {} when nothing was reviewed yet."""
        if not self.path.exists():
            return {}
        doc = _read_json(self.path, "verdicts")
        ok = isinstance(doc, dict) and doc.get("format") == VERDICT_FORMAT and isinstance(doc.get("verdicts"), dict)
        if not ok:
            raise RealgapError(f"{self.path}: not a realgap verdict file (format {VERDICT_FORMAT})")
        out = {}
        for key, v in doc["verdicts"].items():
            try:
                idx = int(key)
                validate_verdict({"episode": idx, "verdict": v.get("verdict"), "note": v.get("note", "")},
                                 self.known, max(self.max_note_chars, len(str(v.get("note", "")))))
            except (ValueError, AttributeError) as e:
                raise RealgapError(f"{self.path}: verdicts[{key!r}]: {e}") from e
            item = self.known[idx]
            for field in ("condition", "seed"):  # the store was rescored/reordered since: do not misattribute
                if v.get(field) != item.get(field):
                    raise RealgapError(f"{self.path}: verdicts[{key!r}].{field} is {v.get(field)!r}, but episode "
                                       f"{idx} now has {item.get(field)!r} (move the file away to start over)")
            out[idx] = v
        return out

    def record(self, payload: Any) -> dict:
        """Validate and store one verdict; returns the stored entry. Raises VerdictError on bad input."""
        episode, verdict, note = validate_verdict(payload, self.known, self.max_note_chars)
        item = self.known[episode]
        entry = {"episode": episode, "condition": item.get("condition"), "seed": item.get("seed"),
                 "verdict": verdict, "note": note, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with self._locked():
            current = self.load()  # another tab or server may have written since we last read
            current[episode] = entry
            doc = {"format": VERDICT_FORMAT,
                   "verdicts": {str(k): current[k] for k in sorted(current)}}
            atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True))
        return entry


def precision_summary(queue: list[dict], verdicts: dict[int, dict]) -> dict:
    """The flagger's precision on reviewed flagged items, and the failure rate among the reviewed
    unflagged sample (an estimate of what the flagger misses: its false-omission rate).

    ``unsure`` verdicts are counted but left out of both rates. Both come with a Wilson 95% interval.
    """
    out = {}
    for kind, key in (("flagged", "precision"), ("sample", "unflagged_failure_rate")):
        items = [q for q in queue if q["kind"] == kind]
        counts = {v: sum(verdicts.get(q["episode"], {}).get("verdict") == v for q in items) for v in VERDICTS}
        decided = counts["real_failure"] + counts["benign"]
        out[kind] = {"in_queue": len(items), "reviewed": sum(counts.values()), **counts}
        out[key] = stats.wilson(counts["real_failure"], decided).as_dict()
    return _json_safe(out)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return _finite(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    return x


def verdicts_csv(queue: list[dict], verdicts: dict[int, dict]) -> str:
    """One row per reviewed queue item, in queue order."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for q in queue:
        v = verdicts.get(q["episode"])
        if v is None:
            continue
        w.writerow({"queue_position": q["position"], "kind": q["kind"], "episode": q["episode"],
                    "condition": q["condition"], "seed": q["seed"], "success": q["success"],
                    "termination_reason": q["termination_reason"], "flagged": q["flagged"], "score": q["score"],
                    "alarm_step": q["alarm_step"], "verdict": v["verdict"], "note": v.get("note", ""),
                    "time": v.get("time", "")})
    return buf.getvalue()


# -------------------------------------------------------------------------------------- application
class ReviewApp:
    """Everything the server answers, independent of HTTP (so it is testable without a socket)."""

    def __init__(self, out: str | Path, options: dict | None = None):
        self.options = {**DEFAULTS, **(options or {})}
        self.suite = load_suite(out)
        self.queue = build_queue(self.suite.scored, int(self.options["n_unflagged"]), int(self.options["seed"]))
        self.by_episode = {q["episode"]: q for q in self.queue}
        self.verdicts = VerdictStore(self.suite.out / REVIEW_DIR / VERDICT_FILE, self.by_episode,
                                     int(self.options["max_note_chars"]))
        keys = self.suite.store.keys
        self.image_keys = [k for k in keys if is_image_key(k)]
        self.has_chunks = "chunks" in keys
        self._store_lock = threading.Lock()  # zarr reads from several handler threads: one at a time
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()  # small LRU of decoded episodes

    # ----------------------------------------------------------------- reads
    def _read(self, episode: int, keys: list[str]) -> dict[str, np.ndarray]:
        with self._store_lock:
            return self.suite.store.episode(episode, keys=keys)

    def frames(self, episode: int) -> np.ndarray | None:
        """(T+1, H, W*cams, 3) uint8 of one episode (cameras side by side), None without stored frames."""
        # a suite says which episodes kept frames (the others are zeros); a logged store has them all
        if not self.image_keys or self.suite.infos[episode].get("frames", True) is False:
            return None
        with self._store_lock:
            if episode in self._frames:
                self._frames.move_to_end(episode)
                return self._frames[episode]
        arrays = self._read(episode, self.image_keys)
        strip = np.concatenate([arrays[k] for k in self.image_keys], axis=2)
        with self._store_lock:
            self._frames[episode] = strip
            while len(self._frames) > 4:
                self._frames.popitem(last=False)
        return strip

    def frame_png(self, episode: int, t: int) -> bytes | None:
        import cv2

        frames = self.frames(episode)
        if frames is None or not 0 <= t < len(frames):
            return None
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(frames[t]), cv2.COLOR_RGB2BGR))
        return buf.tobytes() if ok else None

    def chunks(self, episode: int) -> dict:
        """The K chunks sampled at each replan of ``episode`` (``data/chunks``), plus the executed actions."""
        if not self.has_chunks:
            return {"available": False, "replans": []}
        data = self._read(episode, ["chunks", "action"])
        chunks, actions = data["chunks"], data["action"]
        replans = []
        for t in range(len(chunks)):
            c = chunks[t]
            if np.isfinite(c).all():
                replans.append({"step": t, "samples": np.round(c.astype(float), 5).tolist()})
        meta = self.suite.meta
        return _json_safe({
            "available": bool(replans), "replans": replans,
            "n_obs_steps": meta.get("n_obs_steps"), "n_action_steps": meta.get("n_action_steps"),
            "actions": np.round(actions.astype(float), 5).tolist(),
        })

    def episode(self, episode: int) -> dict:
        item = self.by_episode[episode]
        info = self.suite.infos[episode]
        scored = self.suite.scored[episode]
        task = info.get("task") or {}
        frames = self.frames(episode)
        n_frames = 0 if frames is None else int(len(frames))
        video = None
        if n_frames:  # a video the report already wrote for this episode
            outcome = "success" if info.get("success") else info.get("termination_reason")
            for ext in ("webm", "mp4"):
                rel = f"report/videos/{info.get('condition')}_seed{info.get('seed')}_{outcome}.{ext}"
                if (self.suite.out / rel).is_file():
                    video = rel
                    break
        return _json_safe({
            **item,
            "instruction": task.get("instruction") if isinstance(task, dict) else None,
            "task": task, "dr_params": info.get("dr_params"), "length": info.get("length"),
            "error": info.get("error"), "failure_step": scored.get("failure_step"), "trace": scored["trace"],
            "n_frames": n_frames, "cameras": [k[len("image_"):] for k in self.image_keys] if n_frames else [],
            "has_chunks": self.has_chunks, "report_video": video,
            "verdict": self.verdicts.load().get(episode),
        })

    def queue_state(self) -> dict:
        verdicts = self.verdicts.load()
        cal = self.suite.calibration or {}
        return _json_safe({
            "suite": self.suite.name, "out": str(self.suite.out),
            "calibration": {k: cal.get(k, self.suite.meta.get(k)) for k in
                            ("score", "aggregate", "threshold", "alpha", "n", "k_samples", "policy", "policy_digest")},
            "n_scored": len(self.suite.scored), "n_flagged": sum(e["flagged"] for e in self.suite.scored.values()),
            "items": [{**q, "verdict": (verdicts.get(q["episode"]) or {}).get("verdict")} for q in self.queue],
            "summary": precision_summary(self.queue, verdicts),
        })

    def record(self, payload: Any) -> dict:
        entry = self.verdicts.record(payload)
        return {"saved": entry, "summary": precision_summary(self.queue, self.verdicts.load())}

    def export_csv(self) -> str:
        return verdicts_csv(self.queue, self.verdicts.load())

    def resolve_file(self, rel: str) -> Path | None:
        """A file inside the suite folder, or None for anything that leaves it (``..``, absolute, links)."""
        if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or ":" in rel.split("/")[0]:
            return None
        if any(part == ".." for part in rel.split("/")):
            return None
        path = (self.suite.out / rel).resolve()
        if not path.is_relative_to(self.suite.out) or not path.is_file():
            return None
        return path


def static_asset(name: str) -> bytes:
    return (resources.files("realgap.evaluation") / "review_static" / name).read_bytes()


# ------------------------------------------------------------------------------------------- server
class ReviewHandler(BaseHTTPRequestHandler):
    server_version = "realgap-review"
    app: ReviewApp  # set on the subclass made by make_server
    quiet = True

    def log_request(self, code="-", size="-"):  # only refusals and errors are worth a line
        if not self.quiet and isinstance(code, int) and code >= 400:
            super().log_request(code, size)

    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name)
        if not self.quiet:
            super().log_message(format, *args)

    # ------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        bound = self.server.server_address[0]
        return bound in ("0.0.0.0", "::") or name in LOOPBACK | {bound}

    # ------------------------------------------------------------ routes
    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        if not self._host_ok():
            return self._error(403, "Host header is not this server's")
        raw = urlsplit(self.path).path
        try:
            if raw in ("/", "/index.html"):
                return self._send(200, static_asset("index.html"), STATIC["index.html"])
            if raw == "/favicon.ico":
                return self._send(204, b"", "image/x-icon")
            if raw.startswith("/static/"):
                name = raw[len("/static/"):]
                if name not in STATIC:
                    return self._error(404, "no such asset")
                return self._send(200, static_asset(name), STATIC[name])
            if raw == "/api/queue":
                return self._json(200, self.app.queue_state())
            if raw == "/api/export.csv":
                return self._send(200, self.app.export_csv().encode(), "text/csv; charset=utf-8",
                                  {"Content-Disposition": 'attachment; filename="verdicts.csv"'})
            if raw.startswith("/api/episode/"):
                return self._episode_route(raw[len("/api/episode/"):].split("/"))
            if raw.startswith("/files/"):
                path = self.app.resolve_file(unquote(raw[len("/files/"):]))
                if path is None:
                    return self._error(404, "not a file inside the suite folder")
                ctype = FILE_TYPES.get(path.suffix.lower(), "application/octet-stream")
                return self._send(200, path.read_bytes(), ctype)
            return self._error(404, "not found")
        except BrokenPipeError:
            pass
        except Exception as e:  # a bug must not kill the reviewer's session
            self._error(500, f"{type(e).__name__}: {e}"[:300])

    def _episode_route(self, parts: list[str]) -> None:
        try:
            episode = int(parts[0])
        except ValueError:
            return self._error(404, "not an episode index")
        if episode not in self.app.by_episode:
            return self._error(404, f"episode {episode} is not in the review queue")
        if len(parts) == 1:
            return self._json(200, self.app.episode(episode))
        if len(parts) == 2 and parts[1] == "chunks":
            return self._json(200, self.app.chunks(episode))
        if len(parts) == 3 and parts[1] == "frame" and parts[2].endswith(".png") and parts[2][:-4].isdigit():
            png = self.app.frame_png(episode, int(parts[2][:-4]))
            if png is None:
                return self._error(404, "no such frame")
            return self._send(200, png, "image/png", {"Cache-Control": "max-age=3600"})
        return self._error(404, "not found")

    def do_POST(self):  # noqa: N802
        if not self._host_ok():
            return self._error(403, "Host header is not this server's")
        if urlsplit(self.path).path != "/api/verdict":
            return self._error(404, "not found")
        if self.headers.get_content_type() != "application/json":
            return self._error(415, "send the verdict as application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(411, "Content-Length required")
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be parsed as the next request
            return self._error(413, f"body over {MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._error(400, "body: not valid JSON")
        try:
            return self._json(200, self.app.record(payload))
        except VerdictError as e:
            return self._error(400, str(e))
        except RealgapError as e:  # the verdict file went bad under us (edited by hand?)
            return self._error(500, str(e))


def make_server(app: ReviewApp, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> ThreadingHTTPServer:
    """A threading HTTP server for ``app`` (port 0 = a free port: read ``server.server_address``)."""
    handler = type("BoundReviewHandler", (ReviewHandler,), {"app": app, "quiet": quiet})
    try:
        server = ThreadingHTTPServer((host, int(port)), handler)
    except OSError as e:
        raise RealgapError(f"review.port: cannot listen on {host}:{port} ({e.strerror or e})") from e
    server.daemon_threads = True
    return server


# ---------------------------------------------------------------------------------------------- CLI
def _options(cfg: dict) -> dict:
    review = cfg.get("review") or {}
    unknown = sorted(set(review) - set(DEFAULTS))
    if unknown:
        raise RealgapError(f"review.{unknown[0]}: unknown option (known: {', '.join(DEFAULTS)})")
    opts = {**DEFAULTS, **review}
    limits = (("port", 0, 65535), ("n_unflagged", 0, None), ("seed", 0, None), ("max_note_chars", 1, None))
    for key, low, high in limits:
        v = opts[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
            bounds = f"[{low}, {high if high is not None else 'inf'}]"
            raise RealgapError(f"review.{key}: expected an integer in {bounds}, got {v!r}")
    if not isinstance(opts["host"], str) or not opts["host"]:
        raise RealgapError(f"review.host: expected a host name or address, got {opts['host']!r}")
    return opts


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("out") in (None, "", "???"):
        raise RealgapError("out: missing (a scored suite folder, e.g. out=outputs/suite/default)")
    opts = _options(cfg)
    app = ReviewApp(cfg["out"], opts)
    if opts["export"]:
        path = Path(opts["export"]).expanduser()
        if path.exists() and not overwrite:
            raise RealgapError(f"review.export: {path} exists (pass --overwrite to replace it)")
        if not path.parent.is_dir():
            raise RealgapError(f"review.export: folder {path.parent} does not exist")
        atomic_write_text(path, app.export_csv())
        s = precision_summary(app.queue, app.verdicts.load())
        print(f"review: {s['flagged']['reviewed'] + s['sample']['reviewed']} verdicts -> {path}")
        print(_summary_line(s))
        return 0
    server = make_server(app, opts["host"], opts["port"], quiet=False)
    host, port = server.server_address[:2]
    if opts["host"] not in LOOPBACK:
        print(f"review: warning: listening on {host}, reachable from other machines (no authentication)")
    n_flagged = sum(q["kind"] == "flagged" for q in app.queue)
    print(f"review: {n_flagged} flagged + {len(app.queue) - n_flagged} sampled unflagged episodes; "
          f"verdicts -> {app.verdicts.path}")
    print(f"review: open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/  (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("review: stopped; every verdict is saved")
    finally:
        server.server_close()
    return 0


def _summary_line(s: dict) -> str:
    def rate(iv: dict, k: int, n: int) -> str:
        if iv["estimate"] is None:
            return f"{k}/{n} (none decided yet)"
        return f"{k}/{n} = {iv['estimate']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"

    f, m = s["flagged"], s["sample"]
    return (f"review: flagger precision {rate(s['precision'], f['real_failure'], f['real_failure'] + f['benign'])}"
            f" ({f['unsure']} unsure); real failures among the unflagged sample "
            f"{rate(s['unflagged_failure_rate'], m['real_failure'], m['real_failure'] + m['benign'])}"
            f" ({m['unsure']} unsure)")
