"""The policy protocol every realgap runner speaks.

A runner steps a batch of envs in lockstep; slot ``i`` is one env running episode ``episode_seeds[i]``.
Bring your own policy by implementing these two methods (no base class needed)::

    class MyPolicy:
        def reset(self, episode_seeds):          # a new batch starts
            ...
        def act(self, obs, slots):               # obs[j] belongs to slot slots[j]
            return np.zeros((len(slots), 4), np.float32)

Rules that keep results reproducible and paired:
- ``act`` returns float actions of shape ``(len(slots), action_dim)`` in [-1, 1].
- Any randomness is derived from each slot's episode seed (``realgap.seeding``), never from the
  batch composition or global RNG state, so an episode's outcome does not depend on which worker ran it.
- Finished envs drop out of ``slots``; their state may be discarded.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    def reset(self, episode_seeds: Sequence[int]) -> None: ...

    def act(self, obs: Sequence[dict[str, Any]], slots: Sequence[int]) -> np.ndarray: ...
