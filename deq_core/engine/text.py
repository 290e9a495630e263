"""Word-level tokenisation for text modalities (no downloads: the vocabulary is built from training notes)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from deq_core.engine.modality import PAD_TOKEN, UNKNOWN_TOKEN

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (punctuation dropped)."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], min_count: int = 1, max_size: int = 5000) -> tuple[str, ...]:
    """Vocabulary ordered by frequency then alphabetically, so it is deterministic."""
    counts = Counter(w for t in texts for w in words(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return (PAD_TOKEN, UNKNOWN_TOKEN, *kept[: max_size - 2])


def tokenize(text: str, vocabulary: Sequence[str], max_tokens: int) -> list[int]:
    """Token ids of ``text``, truncated and right-padded with 0 to ``max_tokens``."""
    index = {w: i for i, w in enumerate(vocabulary)}
    ids = [index.get(w, 1) for w in words(text)][:max_tokens]
    return ids + [0] * (max_tokens - len(ids))


def token_strings(ids: Sequence[int], vocabulary: Sequence[str]) -> list[str]:
    """Token strings for non-padding ids, in order."""
    return [vocabulary[i] for i in ids if i != 0]
