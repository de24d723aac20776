"""Character vocabulary, stored as JSON (never pickle: a pickled converter runs code on load).

Id 0 is the unknown symbol: characters outside the vocabulary (rare ones dropped by the
`max_vocab` cap, or new ones in a prime) map to it, and the model learns it like any other.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

UNKNOWN = "\ufffd"  # the Unicode replacement character stands for any unknown char


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]  # chars[0] is UNKNOWN

    @classmethod
    def from_text(cls, text: str, max_vocab: int) -> Vocab:
        """The `max_vocab - 1` most frequent characters plus the unknown symbol.

        Ties are broken by the character itself so the same text always gives the same ids.
        """
        counts = Counter(text)
        counts.pop(UNKNOWN, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = sorted(char for char, _ in ranked[: max(1, max_vocab - 1)])
        return cls((UNKNOWN, *kept))

    @property
    def size(self) -> int:
        return len(self.chars)

    def _index(self) -> dict[str, int]:
        # Cached on first use; the dataclass is frozen, so bypass __setattr__.
        index = self.__dict__.get("_cached_index")
        if index is None:
            index = {char: i for i, char in enumerate(self.chars)}
            object.__setattr__(self, "_cached_index", index)
        return index

    def encode(self, text: str) -> np.ndarray:
        index = self._index()
        return np.fromiter((index.get(char, 0) for char in text), dtype=np.int32,
                           count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` the vocabulary does not hold, in order of appearance."""
        index = self._index()
        return list(dict.fromkeys(char for char in text if char not in index))

    def to_json(self) -> str:
        return json.dumps({"format": "rnnserve-vocab/1", "chars": list(self.chars)},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        chars = data.get("chars") if isinstance(data, dict) else None
        if (not isinstance(chars, list) or not chars or chars[0] != UNKNOWN
                or not all(isinstance(c, str) and len(c) == 1 for c in chars)
                or len(set(chars)) != len(chars)):
            raise ValueError("not an rnnserve vocabulary: expected distinct single characters "
                             "starting with the unknown symbol")
        return cls(tuple(chars))
