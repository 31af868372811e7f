"""Receding-horizon execution of a chunked policy, speaking the realgap policy protocol.

Each slot keeps its last ``n_obs_steps`` observations (the first one repeated at the start, as the
training sampler pads). When a slot's action queue is empty it replans: all such slots go into ONE
``sample_chunks`` call; the slot executes ``n_action_steps`` actions of sample 0, starting at the
current step (``pred[To-1 : To-1+Ta]``). The noise of replan r of the episode with seed s derives
from ``(s, "policy_noise", r)`` only, so an episode's actions never depend on the batch it ran in.

``chunk_choice="medoid"`` executes the medoid of the K samples' executed parts instead; the chunk set is then
reordered so that the executed chunk is sample 0 for everything downstream. Every chunk set (K, horizon, action_dim) goes to ``on_chunk(slot, step, chunks)`` for
uncertainty scoring. After each ``act`` call, ``last_chunks[j]`` is the chunk set sampled in that call
for ``slots[j]`` (None where that slot did not replan), and ``slot_chunks[slot]`` the latest one per slot.

Threads: torch's intra-op threads are left to the caller (a rollout worker usually wants
``torch.set_num_threads(1)`` so parallel workers don't oversubscribe the cores).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from realgap.policies.diffusion import DiffusionPolicy
from realgap.seeding import derive_seed

ChunkHook = Callable[[int, int, np.ndarray], None]


def replan_seed(episode_seed: int, replan: int) -> int:
    """The noise seed of replan ``replan`` (0, 1, ...) of the episode with ``episode_seed``."""
    return derive_seed(int(episode_seed), "policy_noise", int(replan))


def history_rows(step: int, n_obs_steps: int) -> list[int]:
    """Step rows of the observation history the executor feeds at ``step`` (the first row repeated at the start)."""
    return [max(0, step - n_obs_steps + 1 + i) for i in range(n_obs_steps)]


def sample_at(policy: DiffusionPolicy, steps: dict[str, np.ndarray], instruction: str, replan_steps: Sequence[int],
              episode_seed: int, num_samples: int, replans: Sequence[int] | None = None,
              chunk_choice: str = "first") -> np.ndarray:
    """Re-sample the K chunks of logged replans offline: (len(replan_steps), K, horizon, action_dim).

    ``steps`` holds the episode's per-step observation arrays (row t = o_t). With the episode seed
    and replan indices of the run, this reproduces what the executor sampled online (same history,
    same noise, the executed chunk first), in one batched call.
    """
    keys = [*policy.state_keys, *policy.image_keys]
    replans = range(len(replan_steps)) if replans is None else replans
    batch = {k: np.stack([steps[k][history_rows(t, policy.n_obs_steps)] for t in replan_steps]) for k in keys}
    batch["instruction"] = [instruction] * len(replan_steps)
    seeds = [replan_seed(episode_seed, r) for r in replans]
    chunks = policy.sample_chunks(batch, num_samples=int(num_samples), seed=seeds)
    start = policy.n_obs_steps - 1
    return np.stack([executed_first(c, start, policy.n_action_steps, chunk_choice) for c in chunks])


CHUNK_CHOICES = ("first", "medoid")


def medoid(chunks: np.ndarray) -> int:
    """Index of the chunk (K, T, A) with the smallest summed distance to the others: the samples' consensus,
    which never averages two modes into an action neither would take. Ties go to the lowest index."""
    flat = chunks.reshape(len(chunks), -1).astype(np.float64)
    dist = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1)).sum(1)
    return int(np.argmin(dist))


def executed_first(chunks: np.ndarray, start: int, length: int, chunk_choice: str) -> np.ndarray:
    """The K chunks (K, horizon, A) with the one to execute first: "sample 0 is executed" then holds for every
    consumer (stored chunks, uncertainty scores) whatever the choice. ``medoid`` judges the executed part."""
    if chunk_choice == "first" or len(chunks) < 2:
        return chunks
    k = medoid(chunks[:, start:start + length])
    return chunks if k == 0 else chunks[[k, *(i for i in range(len(chunks)) if i != k)]]


class RecedingHorizonExecutor:
    def __init__(self, policy: DiffusionPolicy, num_samples: int = 1, n_action_steps: int | None = None,
                 on_chunk: ChunkHook | None = None, chunk_choice: str = "first"):
        self.policy = policy.eval()
        self.num_samples = int(num_samples)
        if chunk_choice not in CHUNK_CHOICES:
            raise ValueError(f"chunk_choice: unknown '{chunk_choice}' ({' | '.join(CHUNK_CHOICES)})")
        self.chunk_choice = chunk_choice
        self.n_action_steps = int(n_action_steps or policy.n_action_steps)
        if not 1 <= self.n_action_steps <= policy.horizon - policy.n_obs_steps + 1:
            raise ValueError(f"n_action_steps must be in [1, {policy.horizon - policy.n_obs_steps + 1}]")
        self.on_chunk = on_chunk
        self.keys = [*policy.state_keys, *policy.image_keys]
        self.reset([])

    def reset(self, episode_seeds: Sequence[int]) -> None:
        self.episode_seeds = [int(s) for s in episode_seeds]
        n = len(self.episode_seeds)
        self.history: list[deque] = [deque(maxlen=self.policy.n_obs_steps) for _ in range(n)]
        self.queue: list[deque] = [deque() for _ in range(n)]
        self.steps = [0] * n
        self.replans = [0] * n
        self.instructions: list[str] = [""] * n
        self.unknown_words: list[list[str]] = [[] for _ in range(n)]
        self.slot_chunks: dict[int, np.ndarray] = {}
        self.last_chunks: list[np.ndarray | None] = []

    def episode_info(self, slot: int) -> dict[str, Any]:
        """What the policy reports about a slot's episode (the suite stores it in the episode info)."""
        return {"unknown_words": list(self.unknown_words[slot])}

    def act(self, obs: Sequence[dict[str, Any]], slots: Sequence[int]) -> np.ndarray:
        to = self.policy.n_obs_steps
        for o, s in zip(obs, slots):
            frame = {k: np.asarray(o[k]) for k in self.keys}
            if not self.history[s]:
                self.history[s].extend([frame] * to)
                self.instructions[s] = str(o.get("instruction", ""))
                if hasattr(self.policy, "unknown_words"):  # encoded as <unk>; reported, never fatal
                    self.unknown_words[s] = self.policy.unknown_words(self.instructions[s])
            else:
                self.history[s].append(frame)
        need = [s for s in slots if not self.queue[s]]
        if need:
            self._replan(need)
        self.last_chunks = [self.slot_chunks[s] if s in need else None for s in slots]
        out = np.stack([self.queue[s].popleft() for s in slots]).astype(np.float32)
        for s in slots:
            self.steps[s] += 1
        return np.clip(out, -1.0, 1.0)

    def _replan(self, slots: list[int]) -> None:
        batch = {k: np.stack([np.stack([f[k] for f in self.history[s]]) for s in slots]) for k in self.keys}
        batch["instruction"] = [self.instructions[s] for s in slots]
        seeds = [replan_seed(self.episode_seeds[s], self.replans[s]) for s in slots]
        chunks = self.policy.sample_chunks(batch, num_samples=self.num_samples, seed=seeds)
        start = self.policy.n_obs_steps - 1
        for s, c in zip(slots, chunks):
            c = executed_first(c, start, self.n_action_steps, self.chunk_choice)
            self.slot_chunks[s] = c
            if self.on_chunk is not None:
                self.on_chunk(s, self.steps[s], c)
            self.queue[s].extend(c[0, start:start + self.n_action_steps])
            self.replans[s] += 1
