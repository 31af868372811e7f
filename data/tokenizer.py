"""A tiny word-level instruction tokenizer with a fixed vocabulary.

The vocabulary is built once (from the env catalogue's words, or any word list) and saved with the
checkpoint as JSON, so a trained policy tokenizes exactly as it did during training. Unknown words map
to ``<unk>``; sequences are padded with ``<pad>`` (id 0) to ``max_len``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np

from realgap.errors import RealgapError

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def catalogue_words() -> list[str]:
    """Words the env can put in an instruction: its templates plus catalogue names (if the env exposes them)."""
    try:
        from realgap.envs import catalogue  # type: ignore[attr-defined]
    except ImportError:
        return []
    words: set[str] = set()
    for name in (n for n in dir(catalogue) if not n.startswith("_")):
        value = getattr(catalogue, name)
        for text in _strings_in(value):
            words.update(words_of(text))
    return sorted(words)


def _strings_in(value: Any, depth: int = 0) -> Iterable[str]:
    # Walk plain containers / dataclasses of the catalogue module, collecting their strings.
    if depth > 4:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings_in(k, depth + 1)
            yield from _strings_in(v, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _strings_in(v, depth + 1)
    elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        for f in value.__dataclass_fields__:
            yield from _strings_in(getattr(value, f), depth + 1)


class WordTokenizer:
    """Maps instructions to fixed-length int64 id arrays."""

    def __init__(self, vocab: Sequence[str], max_len: int = 16):
        if list(vocab[:2]) != [PAD, UNK]:
            vocab = [PAD, UNK] + [w for w in vocab if w not in (PAD, UNK)]
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise RealgapError("tokenizer.vocab: duplicate words")
        self.max_len = int(max_len)

    @classmethod
    def from_texts(cls, texts: Iterable[str], extra_words: Iterable[str] = (), max_len: int = 16) -> "WordTokenizer":
        words = set(extra_words)
        for t in texts:
            words.update(words_of(t))
        return cls(sorted(words), max_len=max_len)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ids = np.zeros((len(texts), self.max_len), np.int64)
        unk = self.index[UNK]
        for i, text in enumerate(texts):
            toks = [self.index.get(w, unk) for w in words_of(text)][: self.max_len]
            ids[i, : len(toks)] = toks
        return ids

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that are not in the vocabulary (each becomes ``<unk>``), in order of appearance."""
        return list(dict.fromkeys(w for w in words_of(text) if w not in self.index))

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i != 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "vocab": self.vocab, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tokenizer") -> "WordTokenizer":
        if d.get("type") != "word" or not isinstance(d.get("vocab"), list):
            raise RealgapError(f"{where}: expected a word tokenizer with a vocab list")
        return cls(d["vocab"], max_len=int(d.get("max_len", 16)))
