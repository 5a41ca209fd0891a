"""Korean sentences through kiwipiepy: split them, and tag their morphemes.

Korean asks, requests and offers with verb endings (-ㄴ가요, -주세요, -주시면 … 드릴게요), which a
morphological analyzer reads reliably and a phrase list does not. Kiwi costs about 3 s to load and its
first call about as much again, so it is loaded once per process, on the first Korean text: an
English-only run never pays for it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_HANGUL = re.compile("[\uac00-\ud7a3]")
_lock = threading.Lock()
_kiwi: Any = None


def has_hangul(text: str) -> bool:
    return _HANGUL.search(text) is not None


def is_korean(text: str) -> bool:
    """At least 30% of the letters are Hangul: Korean with English terms, not English with a Korean word."""
    letters = sum(map(str.isalpha, text))
    return bool(letters) and len(_HANGUL.findall(text)) / letters >= 0.3


def kiwi() -> Any:
    """The process's one Kiwi analyzer, built on first use (thread-safe)."""
    global _kiwi
    if _kiwi is None:
        with _lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi  # imported late: the import itself loads the model

                _kiwi = Kiwi()
    return _kiwi


@dataclass(frozen=True)
class Morpheme:
    form: str  # e.g. "주", "세요", "ᆫ가"
    tag: str  # Sejong-style tag: EF (sentence-final ending), VX (auxiliary verb), EC, EP, NNG...


@dataclass(frozen=True)
class Sentence:
    text: str
    morphemes: tuple[Morpheme, ...]

    def final_ending(self) -> str | None:
        """The form of the last sentence-final ending (EF), or None (a fragment, a title)."""
        for morpheme in reversed(self.morphemes):
            if morpheme.tag == "EF":
                return morpheme.form
        return None


@lru_cache(maxsize=4096)
def sentences(text: str) -> tuple[Sentence, ...]:
    """Kiwi's sentence split of `text`, each with its morphemes."""
    split = kiwi().split_into_sents(text, return_tokens=True)
    return tuple(
        Sentence(s.text, tuple(Morpheme(t.form, t.tag.split("-")[0]) for t in s.tokens)) for s in split
    )


# Tags that carry what a text is about: nouns, roots, foreign words, numbers, verbs and adjectives.
CONTENT_TAGS = frozenset({"NNG", "NNP", "XR", "SL", "SN", "SH", "VV", "VA"})


@lru_cache(maxsize=4096)
def content_words(text: str) -> tuple[str, ...]:
    """The content morphemes of `text` in order (nouns, roots, verb and adjective stems, foreign words)."""
    return tuple(
        token.form.lower() for token in kiwi().tokenize(text) if token.tag.split("-")[0] in CONTENT_TAGS
    )
