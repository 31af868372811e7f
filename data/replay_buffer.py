"""Episode storage in zarr, in diffusion_policy's replay-buffer layout.

    <store>/data/<key>          per-step arrays of all episodes, concatenated along time
    <store>/meta/episode_ends   int64 cumulative ends (episode i is data[ends[i-1]:ends[i]])
    <store>/meta/episode_info   one JSON string per episode (seed, task, DR params, success, ...)
    <store>/zarr.json           attribute ``n_episodes``: the commit marker

One class serves demonstrations and evaluation episode stores.

Crash safety: ``append_episode(s)`` writes ``data/*`` first, then ``meta/*``, and bumps the
``n_episodes`` attribute last. zarr's local store writes every file atomically, so a kill at any point
leaves the previous episodes intact; opening with ``mode="a"`` truncates the uncommitted tail.

Integrity (layout version 2): every array ends its codec chain with zarr 3's ``crc32c`` checksum, and
every chunk is written even when it holds only the fill value (zarr would otherwise skip it). A chunk
that is damaged fails its checksum, and a chunk that is missing is an error rather than zeros:
:meth:`ReplayBuffer.verify` reads everything and names the first bad array and episode.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from realgap.errors import RealgapError
from realgap.outputs import claim_output

CHUNK_BYTES = 2 * 1024 * 1024  # ~2 MB chunks along time, as diffusion_policy
LAYOUT_VERSION = 2  # 2: crc32c on every array, every chunk written (1: neither)
WRITE_CONFIG = {"write_empty_chunks": True}  # a missing chunk must mean damage, never "all zeros"


def _compressor(dtype: np.dtype, ndim: int) -> list:
    # Images: zstd (lossless, strong on flat-coloured renders); low-dim: fast lz4. Then a checksum.
    if dtype == np.uint8 and ndim >= 3:
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()]
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def _checksummed(arr: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in arr.metadata.codecs)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else (1e308 if x > 0 else -1e308)
    return x


def to_json(info: Mapping[str, Any]) -> str:
    """JSON for episode metadata; numpy values become plain Python values."""
    return json.dumps(_to_jsonable(info), sort_keys=True)


class ReplayBuffer:
    """A zarr replay buffer. Use :meth:`create`, :meth:`open` or :meth:`open_output`."""

    def __init__(self, root: zarr.Group, path: Path, writable: bool):
        self.root = root
        self.path = path
        self.writable = writable

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> "ReplayBuffer":
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise RealgapError(f"{path}: already exists (pass --overwrite to replace it, or --resume)")
            shutil.rmtree(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            root = zarr.open_group(str(path), mode="w")
        except OSError as e:
            raise RealgapError(f"{path}: cannot create store ({e.strerror or e})") from e
        root.create_group("data")
        meta = root.create_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64",
                          compressors=_compressor(np.dtype("int64"), 1))
        # Small chunks: every append re-encodes the last partial chunk, and with 1024 JSON infos a chunk
        # that big left the writer's RSS ~50 MB higher (allocator high-water mark) after 2000 episodes.
        meta.create_array("episode_info", shape=(0,), chunks=(128,), dtype=str,
                          compressors=[ZstdCodec(level=3), Crc32cCodec()])
        root.attrs.update({"n_episodes": 0, "layout": "realgap.replay_buffer", "layout_version": LAYOUT_VERSION})
        return cls(root, path, writable=True)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "ReplayBuffer":
        """Open an existing store; ``mode="a"`` also truncates any uncommitted tail."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not (path / "zarr.json").exists():
            raise RealgapError(f"{path}: not a zarr store (no zarr.json)")
        try:
            root = zarr.open_group(str(path), mode="r+" if mode == "a" else "r")
        except Exception as e:  # zarr raises assorted errors on a damaged store
            raise RealgapError(f"{path}: cannot open store ({type(e).__name__}: {e})") from e
        buf = cls(root, path, writable=(mode == "a"))
        buf._validate()
        if mode == "a":
            buf._truncate_uncommitted()
        return buf

    @classmethod
    def open_output(cls, path: str | Path, *, resume: bool, overwrite: bool, field: str = "path") -> "ReplayBuffer":
        """A store under the output rule of every realgap command (``realgap.outputs``); ``field`` names it in errors."""
        path = Path(path)
        if claim_output(path, resume, overwrite, field=field, what="store") == "resume":
            return cls.open(path, mode="a")
        return cls.create(path, overwrite=path.exists())  # what exists here is empty, or --overwrite said so

    # ------------------------------------------------------------- validation
    def _validate(self) -> None:
        where = self.path
        try:
            meta = self.root["meta"]
            ends_arr = meta["episode_ends"]
            info_arr = meta["episode_info"]
            data = self.root["data"]
        except KeyError as e:
            raise RealgapError(f"{where}: missing {e.args[0]!r} (expected meta/episode_ends, meta/episode_info, data/)") from e
        n = self.root.attrs.get("n_episodes")
        if not isinstance(n, int) or n < 0:
            raise RealgapError(f"{where}: attribute n_episodes is missing or invalid ({n!r})")
        if ends_arr.shape[0] < n or info_arr.shape[0] < n:
            raise RealgapError(
                f"{where}: meta/episode_ends has {ends_arr.shape[0]} entries, meta/episode_info "
                f"{info_arr.shape[0]}, but n_episodes is {n}"
            )
        ends = np.asarray(ends_arr[:n])
        if n and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            bad = int(np.argmax(np.diff(np.concatenate([[0], ends])) <= 0))
            raise RealgapError(f"{where}: meta/episode_ends is not strictly increasing (at episode {bad})")
        total = int(ends[-1]) if n else 0
        for key, arr in data.arrays():
            if arr.shape[0] < total:
                raise RealgapError(f"{where}: data/{key} has {arr.shape[0]} steps, episode_ends needs {total}")

    def _truncate_uncommitted(self) -> None:
        n, total = self.n_episodes, self.n_steps
        data = self.root["data"]
        if n == 0:  # a first episode that never committed may have created only some keys
            for key in [k for k, _ in data.arrays()]:
                del data[key]
        for _, arr in data.arrays():
            if arr.shape[0] != total:
                arr.resize((total, *arr.shape[1:]))
        for name in ("episode_ends", "episode_info"):
            arr = self.root["meta"][name]
            if arr.shape[0] != n:
                arr.resize((n,))

    # ------------------------------------------------------------------ reads
    @property
    def n_episodes(self) -> int:
        return int(self.root.attrs["n_episodes"])

    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self.root["meta/episode_ends"][: self.n_episodes], dtype=np.int64)

    @property
    def n_steps(self) -> int:
        n = self.n_episodes
        return int(self.root["meta/episode_ends"][n - 1]) if n else 0

    @property
    def keys(self) -> list[str]:
        return sorted(k for k, _ in self.root["data"].arrays())

    def episode_slice(self, i: int) -> slice:
        if not 0 <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range (store has {self.n_episodes})")
        ends = self.root["meta/episode_ends"]
        start = int(ends[i - 1]) if i > 0 else 0
        return slice(start, int(ends[i]))

    def episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        sl = self.episode_slice(i)
        return {k: np.asarray(self.root["data"][k][sl]) for k in (keys or self.keys)}

    def episode_info(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range (store has {self.n_episodes})")
        return json.loads(str(self.root["meta/episode_info"][i]))

    def episode_infos(self) -> list[dict[str, Any]]:
        n = self.n_episodes
        return [json.loads(str(s)) for s in self.root["meta/episode_info"][:n]] if n else []

    def array(self, key: str) -> np.ndarray:
        """All committed steps of ``data/<key>`` in memory."""
        if key not in self.keys:
            raise RealgapError(f"{self.path}: missing data/{key} (has {', '.join(self.keys) or 'no keys'})")
        return np.asarray(self.root["data"][key][: self.n_steps])

    # ------------------------------------------------------------- integrity
    def verify(self, progress: bool = False) -> int:
        """Read every committed chunk of every array; returns the number of chunks checked.

        Raises a one-line RealgapError naming the first bad array, chunk and episode: a chunk that
        fails its crc32c checksum or cannot be decoded, a chunk file that is missing (checksummed
        arrays write every chunk, so absence is damage), or an episode_info entry that is not JSON.
        """
        n, total = self.n_episodes, self.n_steps
        arrays = [(f"meta/{name}", self.root["meta"][name], n) for name in ("episode_ends", "episode_info")]
        arrays += [(f"data/{key}", self.root["data"][key], total) for key in self.keys]
        plans = []
        for name, arr, rows in arrays:
            step = arr.chunks[0]
            grids = [range(math.ceil(rows / step))] + [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], arr.chunks[1:])]
            plans.append((name, arr, rows, step, list(itertools.product(*grids))))
        from tqdm import tqdm

        bar = tqdm(total=sum(len(p[4]) for p in plans), unit="chunk", desc=f"verify {self.path.name}",
                   disable=not progress, dynamic_ncols=True)
        checked = 0
        with bar:
            for name, arr, rows, step, coords in plans:
                must_exist = _checksummed(arr)
                for coord in coords:
                    lo, hi = coord[0] * step, min(rows, (coord[0] + 1) * step)
                    key = arr.metadata.encode_chunk_key(coord)
                    problem = None
                    if must_exist and not (self.path / name / key).is_file():
                        problem = "is missing"
                    else:
                        try:
                            arr[lo:hi]
                        except Exception as e:  # crc32c mismatch, truncated blosc frame, ...
                            problem = f"is damaged ({_first_line(e)})"
                    if problem:
                        raise RealgapError(f"{self.path}: {name} chunk {key} {problem}; {self._where(name, lo)}")
                    checked += 1
                    bar.update()
        for i, text in enumerate(self.root["meta/episode_info"][:n] if n else []):
            try:
                json.loads(str(text))
            except ValueError as e:
                raise RealgapError(f"{self.path}: meta/episode_info of episode {i} is not JSON ({e})") from e
        return checked

    @property
    def unchecksummed(self) -> list[str]:
        """Arrays without a crc32c codec (written before layout 2): a missing chunk there reads as zeros."""
        names = [f"meta/{n}" for n in ("episode_ends", "episode_info")] + [f"data/{k}" for k in self.keys]
        return [n for n in names if not _checksummed(self.root[n])]

    def _where(self, name: str, row: int) -> str:
        """'first affected episode i (condition c, seed s)' for row ``row`` of array ``name``."""
        if name.startswith("data/"):
            try:
                row = int(np.searchsorted(self.episode_ends, row, side="right"))
            except Exception:  # episode_ends itself is damaged
                return f"first affected step {row}"
        text = f"first affected episode {row}"
        try:
            info = self.episode_info(row)
            tags = ", ".join(f"{k} {info[k]}" for k in ("condition", "seed") if k in info)
            return f"{text} ({tags})" if tags else text
        except Exception:
            return text

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.episode(i)

    def __len__(self) -> int:
        return self.n_episodes

    # ----------------------------------------------------------------- writes
    def append_episode(self, steps: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> int:
        """Append one complete episode; returns its index. All arrays share their first (time) axis."""
        return self.append_episodes([(steps, info)])[0]

    def append_episodes(self, episodes: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]) -> list[int]:
        """Append several complete episodes under one commit (far fewer zarr writes than one by one).

        Returns their indices. A kill before the commit loses these episodes only, never earlier ones.
        """
        if not self.writable:
            raise RealgapError(f"{self.path}: opened read-only")
        if not episodes:
            return []
        existing = self.keys
        key_set = sorted(episodes[0][0])
        lengths = []
        for steps, _ in episodes:  # check everything before writing anything
            lens = {k: len(v) for k, v in steps.items()}
            if not steps or len(set(lens.values())) != 1 or 0 in lens.values():
                raise ValueError(f"episode arrays must share one non-zero length, got {lens}")
            if sorted(steps) != (existing if self.n_episodes else key_set):
                raise ValueError(f"episode keys {sorted(steps)} differ from the store's {existing or key_set}")
            lengths.append(next(iter(lens.values())))
        infos = [to_json(info) for _, info in episodes]
        data = self.root["data"]
        start = self.n_steps
        for key in key_set:
            value = np.ascontiguousarray(np.concatenate([np.asarray(steps[key]) for steps, _ in episodes]))
            if key not in existing:
                row_bytes = max(1, int(np.prod(value.shape[1:], dtype=np.int64)) * value.dtype.itemsize)
                chunk_rows = int(max(1, min(CHUNK_BYTES // row_bytes, 1 << 16)))
                data.create_array(
                    key, shape=(0, *value.shape[1:]), chunks=(chunk_rows, *value.shape[1:]),
                    dtype=value.dtype, compressors=_compressor(value.dtype, value.ndim),
                )
            arr = data[key].with_config(WRITE_CONFIG)
            if arr.shape[1:] != value.shape[1:] or arr.dtype != value.dtype:
                raise ValueError(f"data/{key}: got {value.dtype}{value.shape[1:]}, store has {arr.dtype}{arr.shape[1:]}")
            arr.resize((start + len(value), *arr.shape[1:]))
            arr[start:] = value
        n, k = self.n_episodes, len(episodes)
        ends = start + np.cumsum(lengths, dtype=np.int64)
        for name, value in (("episode_ends", ends), ("episode_info", np.array(infos, dtype=object))):
            arr = self.root["meta"][name].with_config(WRITE_CONFIG)
            arr.resize((n + k,))
            arr[n:] = value
        self.root.attrs["n_episodes"] = n + k  # the commit
        return list(range(n, n + k))
