"""Named random streams.

Every consumer of randomness draws from a stream derived from (episode seed, stream name), so
turning one consumer off, or rescaling it, leaves every other stream's draws unchanged.
Never use global RNG state (``np.random.*``, ``random.*``, ``torch.manual_seed``) in library code.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_key(name: str) -> int:
    """A stable 32-bit key for a stream name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def seed_sequence(seed: int, name: str, *extra: int) -> np.random.SeedSequence:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence([int(seed), stream_key(name), *map(int, extra)])


def stream(seed: int, name: str, *extra: int) -> np.random.Generator:
    """Generator for stream ``name`` of episode ``seed`` (optionally sub-indexed, e.g. a replan index)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, name, *extra)))


def derive_seed(seed: int, name: str, *extra: int) -> int:
    """A 63-bit integer seed for APIs that want an int (torch generators, gymnasium)."""
    return int(seed_sequence(seed, name, *extra).generate_state(2, np.uint64)[0] >> np.uint64(1))
