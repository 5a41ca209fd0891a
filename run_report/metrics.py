"""Diversity and complexity metrics for instruction data, before and after evolution.

They answer "what did a run do to my data?" without a tokenizer, so Korean and
English are measured the same way: lengths are in characters, character n-grams
work for any script, and whitespace words add a view that suits English.

Text normalisation (documented because it changes the numbers):
- character n-grams: runs of whitespace become one space, kept as a character,
  and the ends are stripped; case is kept (Hangul has none, and a capital is a
  real surface difference in English);
- words: whitespace-split and lowercased;
- pairwise distance: character 3-grams after lowercasing and collapsing
  whitespace, so only wording, not case or spacing, makes two texts differ
  (failure_checks.rules.char_shingles, which the near-duplicate index uses too).

Distinct-n counts are pooled over all texts, but n-grams never span two texts.

Command line: `python -m run_report.metrics_cli FILE [FILE ...]` (see metrics_cli).
"""

from __future__ import annotations

import random
import statistics
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from typing import Any

from failure_checks.rules import char_shingles, hangul_ratio

Metrics = dict[str, float | int | None]

TABLE_COLUMNS = (  # (header, metrics key)
    ("count", "count"), ("mean_len", "mean_length"), ("median_len", "median_length"),
    ("growth", "growth_over_parent"), ("dist1_chr", "distinct_1_chars"), ("dist2_chr", "distinct_2_chars"),
    ("dist1_word", "distinct_1_words"), ("dist2_word", "distinct_2_words"),
    ("pair_dist", "pairwise_jaccard_distance"), ("hangul", "hangul_ratio"), ("drift", "hangul_ratio_drift"),
)


# --- n-grams -------------------------------------------------------------------


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def distinct_n(unit_lists: Iterable[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled over texts; 0.0 when there are none."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for units in unit_lists:
        count = len(units) - n + 1
        if count > 0:
            total += count
            seen.update(tuple(units[i:i + n]) for i in range(count))
    return len(seen) / total if total else 0.0


def _char_units(text: str) -> str:
    return _collapse_whitespace(text)


def _word_units(text: str) -> list[str]:
    return text.lower().split()


class _NgramCounts:
    """distinct-1 and distinct-2 of character and word units, fed one text at a time.

    Only the distinct n-grams are kept, each as one string, and the totals are counted:
    a character n-gram is its substring (one unit is one character), a word bigram is its
    two words joined by a space (split() words never contain one). Either is a one-to-one
    stand-in for distinct_n's tuples, so the ratios are the same.
    """

    def __init__(self) -> None:
        self.chars1: set[str] = set()
        self.chars2: set[str] = set()
        self.words1: set[str] = set()
        self.words2: set[str] = set()
        self.totals = [0, 0, 0, 0]  # chars1, chars2, words1, words2

    def add(self, text: str) -> None:
        chars, words = _char_units(text), _word_units(text)
        self.chars1.update(chars)
        self.chars2.update(chars[i:i + 2] for i in range(len(chars) - 1))
        self.words1.update(words)
        self.words2.update(map(" ".join, zip(words, words[1:])))
        totals = self.totals
        totals[0] += len(chars)
        totals[1] += max(0, len(chars) - 1)
        totals[2] += len(words)
        totals[3] += max(0, len(words) - 1)

    def ratios(self) -> dict[str, float]:
        sets = (self.chars1, self.chars2, self.words1, self.words2)
        names = ("distinct_1_chars", "distinct_2_chars", "distinct_1_words", "distinct_2_words")
        return {name: len(seen) / total if total else 0.0 for name, seen, total in zip(names, sets, self.totals)}


# --- pairwise distance ---------------------------------------------------------


def jaccard_distance(left: set[str], right: set[str]) -> float:
    """1 - |intersection| / |union|; two empty sets are identical (0.0)."""
    union = left | right
    return 1.0 - len(left & right) / len(union) if union else 0.0


class Reservoir:
    """A uniform sample of at most `size` items from a stream of unknown length (Algorithm R).

    The same items in the same order with the same seed always give the same sample, and
    a stream no longer than `size` is kept whole, in order.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 2:
            raise ValueError(f"sample_size must be at least 2, got {size}")
        self.size, self.items, self.seen = size, [], 0
        self._random = random.Random(seed)

    def add(self, item: str) -> None:
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            slot = self._random.randrange(self.seen + 1)
            if slot < self.size:
                self.items[slot] = item
        self.seen += 1


def sample_for_pairs(texts: Iterable[str], sample_size: int, seed: int) -> list[str]:
    """At most sample_size texts, chosen reproducibly by reservoir sampling, so pair counts stay bounded."""
    reservoir = Reservoir(sample_size, seed)
    for text in texts:
        reservoir.add(text)
    return reservoir.items


def _mean_pairwise_distance(texts: Sequence[str]) -> float | None:
    sets = [char_shingles(text) for text in texts]
    distances = [jaccard_distance(a, b) for a, b in combinations(sets, 2)]
    return statistics.fmean(distances) if distances else None


def pairwise_jaccard_distance(texts: Iterable[str], sample_size: int = 200, seed: int = 0) -> float | None:
    """Mean trigram Jaccard distance over all pairs of a sample; None for fewer than 2 texts."""
    return _mean_pairwise_distance(sample_for_pairs(texts, sample_size, seed))


# --- one group of texts, streamed -----------------------------------------------


class _TextStats:
    """text_metrics of a group of texts fed one at a time; holds no text but the pair sample.

    Per text it keeps a length and a Hangul ratio (for the median and exact means), per
    parent comparison a growth and a drift; the n-gram sets can be dropped with close().
    """

    def __init__(self, sample_size: int, seed: int) -> None:
        self.lengths = array("q")
        self.ratios = array("d")
        self.growth = array("d")
        self.drift = array("d")
        self.ngrams: _NgramCounts | None = _NgramCounts()
        self.distinct: dict[str, float] | None = None
        self.sample = Reservoir(sample_size, seed)

    def add(self, text: str) -> float:
        """Measures text; returns its Hangul ratio."""
        ratio = hangul_ratio(text)
        self.lengths.append(len(text))
        self.ratios.append(ratio)
        self.ngrams.add(text)
        self.sample.add(text)
        return ratio

    def compare(self, length: int, ratio: float, parent_length: int, parent_ratio: float) -> None:
        """One text against its (non-empty) parent."""
        self.growth.append(length / parent_length)
        self.drift.append(ratio - parent_ratio)

    def close(self) -> None:
        """Fixes the distinct-n ratios and frees the n-gram sets."""
        if self.ngrams is not None:
            self.distinct, self.ngrams = self.ngrams.ratios(), None

    def metrics(self) -> Metrics:
        self.close()
        lengths = self.lengths
        # fmean sums with math.fsum, exact whatever the order, so these equal the list-based means.
        return {
            "count": len(lengths),
            "mean_length": statistics.fmean(lengths) if lengths else 0.0,
            "median_length": float(statistics.median(lengths)) if lengths else 0.0,
            "growth_over_parent": statistics.fmean(self.growth) if self.growth else None,
            **self.distinct,
            "pairwise_jaccard_distance": _mean_pairwise_distance(self.sample.items),
            "hangul_ratio": statistics.fmean(self.ratios) if self.ratios else 0.0,
            "hangul_ratio_drift": statistics.fmean(self.drift) if self.drift else None,
        }


# --- public metrics ------------------------------------------------------------


def text_metrics(texts: Iterable[str], parents: Sequence[str | None] | None = None, *, sample_size: int = 200,
                 seed: int = 0) -> Metrics:
    """Length, diversity, language and growth metrics of texts, in one flat dict.

    parents, when given, is parallel to texts; a None or empty parent leaves its
    text out of growth_over_parent and hangul_ratio_drift only.
    """
    if parents is not None:
        texts = list(texts)
        if len(parents) != len(texts):
            raise ValueError(f"parents has {len(parents)} items but texts has {len(texts)}")
    stats = _TextStats(sample_size, seed)
    pairs = zip(texts, parents) if parents is not None else ((text, None) for text in texts)
    for text, parent in pairs:
        ratio = stats.add(text)
        # An empty parent has no length to grow from and no language to keep.
        if isinstance(parent, str) and parent:
            stats.compare(len(text), ratio, len(parent), hangul_ratio(parent))
    return stats.metrics()


def is_text(value: Any) -> bool:
    """A non-empty string: the only kind of value the metrics measure."""
    return isinstance(value, str) and bool(value.strip())


def _level_order(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)  # a non-numeric level still gets a row, after the numbered ones


Rows = Iterable[dict] | Callable[[], Iterable[dict]]
"""Rows to read more than once: a collection, or a function that returns a fresh iterable per call."""


def _reopener(rows: Rows) -> Callable[[], Iterable[dict]]:
    if callable(rows) and not isinstance(rows, Iterable):
        return rows
    if iter(rows) is rows:  # a one-shot iterator cannot be read twice
        rows = list(rows)
    return lambda: rows


class _LevelsOutOfOrder(Exception):
    """A level came back after another one: its n-gram sets were already dropped."""


def _level_stats(records: Iterable[dict], field: str, sample_size: int, seed: int,
                 close_finished: bool) -> dict[str, tuple[_TextStats, list]]:
    """Per level: the stats of its texts and, parallel to them, each text's parent id."""
    levels: dict[str, tuple[_TextStats, list]] = {}
    finished: set[str] = set()
    current = None
    for record in records:
        level = str(record.get("level"))
        if close_finished and level != current:
            if level in finished:
                raise _LevelsOutOfOrder(level)
            if current in levels:
                levels[current][0].close()  # one level's n-gram sets at a time when the file goes level by level
            finished.add(current)
            current = level
        if not is_text(text := record.get(field)):
            continue
        if level not in levels:
            levels[level] = (_TextStats(sample_size, seed), [])
        stats, parent_ids = levels[level]
        stats.add(text)
        parent_ids.append(record.get("parent_id"))
    for stats, _ in levels.values():
        stats.close()
    return levels


def level_metrics(records: Rows, seeds: Rows, *, sample_size: int = 200, seed: int = 0,
                  field: str = "instruction") -> dict[str, dict]:
    """text_metrics of the seeds and of each evolution level, growth and drift against each record's parent.

    Rows whose field is not a non-empty string are left out of every level. A parent is
    the last row of seeds then records with that id, wherever it is.

    records and seeds are streamed, never held: pass collections or functions that return
    a fresh iterable (e.g. the lines of a JSONL file), because records are read twice: once
    for the levels, once for the parents' lengths and Hangul ratios (a one-shot iterator is
    read into a list first). Records written level by level, as a run writes records.jsonl,
    need one level's n-gram sets at a time; interleaved levels keep every level's sets.
    """
    read_records, read_seeds = _reopener(records), _reopener(seeds)
    try:
        levels = _level_stats(read_records(), field, sample_size, seed, close_finished=True)
    except _LevelsOutOfOrder:  # levels interleaved (a hand-made file): keep every level open instead
        levels = _level_stats(read_records(), field, sample_size, seed, close_finished=False)
    # Each parent id's text as complex(length, Hangul ratio): two floats in one small object (lengths are
    # exact as floats). None until found, and for a row whose field is not text. Keys are the records'
    # own parent_id objects, so the map adds no strings.
    parents: dict[Any, complex | None] = dict.fromkeys(
        parent_id for _, parent_ids in levels.values() for parent_id in parent_ids)
    seed_stats = _TextStats(sample_size, seed)
    for row in read_seeds():
        ratio = seed_stats.add(value) if is_text(value := row.get(field)) else None
        if "id" in row and row["id"] in parents:
            parents[row["id"]] = None if ratio is None else complex(len(value), ratio)
    seed_stats.close()
    for row in read_records():
        if "id" in row and row["id"] in parents:
            value = row.get(field)
            parents[row["id"]] = complex(len(value), hangul_ratio(value)) if is_text(value) else None
    result = {"seed": seed_stats.metrics()}
    for level in sorted(levels, key=_level_order):
        stats, parent_ids = levels[level]
        for length, ratio, parent_id in zip(stats.lengths, stats.ratios, parent_ids):
            if (parent := parents[parent_id]) is not None:
                stats.compare(length, ratio, int(parent.real), parent.imag)
        result[level] = stats.metrics()
    return result


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(metrics_by_name: dict[str, dict]) -> str:
    """An aligned plain-text table, one row per name; floats to 3 decimals, None as '-'."""
    header = ["name", *(title for title, _ in TABLE_COLUMNS)]
    rows = [[name, *(_cell(metrics.get(key)) for _, key in TABLE_COLUMNS)] for name, metrics in metrics_by_name.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names read best left-aligned, numbers right-aligned so decimals line up.
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))]).rstrip()

    return "\n".join(line(cells) for cells in [header, *rows])
