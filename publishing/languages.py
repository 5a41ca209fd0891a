"""The languages of a dataset, guessed from the scripts its text is written in.

The card's `language` metadata lets people find the data; a guess from the script is honest enough
for that, and the card says how it was made. Latin script alone does not tell English from French,
so Latin-script text counts as English only when common English words make up a fair share of it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# A script (the first word of a letter's Unicode name) that points at one language.
SCRIPT_LANGUAGE = {"HANGUL": "ko", "HIRAGANA": "ja", "KATAKANA": "ja", "CJK": "zh", "THAI": "th",
                   "GREEK": "el", "HEBREW": "he"}
ENGLISH_WORDS = frozenset("the a an and or of to in is are be it for on with that this what how why you your "
                          "can do does give explain write".split())
ENGLISH_SHARE = 0.15
MIN_ROW_SHARE = 0.05
WORD = re.compile(r"[A-Za-z]+")


def scripts_of(text: str) -> Counter:
    """Letters per script."""
    return Counter(unicodedata.name(ch, "UNKNOWN").split()[0] for ch in text if ch.isalpha())


def language_of(text: str) -> str | None:
    """The language code of one text, or None when its script does not say."""
    scripts = scripts_of(text)
    if not scripts:
        return None
    script = scripts.most_common(1)[0][0]
    # Japanese writes most content words in Han characters: any kana makes Han-heavy text Japanese.
    if script == "CJK" and (scripts["HIRAGANA"] or scripts["KATAKANA"]):
        return "ja"
    if script == "LATIN":
        words = [word.lower() for word in WORD.findall(text)]
        return "en" if words and sum(w in ENGLISH_WORDS for w in words) / len(words) >= ENGLISH_SHARE else None
    return SCRIPT_LANGUAGE.get(script)


class LanguageTally:
    """Counts the language of each row; a language is claimed once it holds a fair share of the rows."""

    def __init__(self) -> None:
        self.by_language: Counter = Counter()
        self.rows = 0

    def add(self, text: str) -> None:
        self.rows += 1
        if (code := language_of(text)) is not None:
            self.by_language[code] += 1

    def codes(self) -> list[str]:
        """Codes of the languages in at least MIN_ROW_SHARE of the rows, most common first."""
        return [code for code, n in self.by_language.most_common() if n >= MIN_ROW_SHARE * max(1, self.rows)]
