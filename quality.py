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
  whitespace, so only wording, not case or spacing, makes two texts differ.

Distinct-n counts are pooled over all texts, but n-grams never span two texts.

Command line: `python -m quality FILE [FILE ...]`, see `--help`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from configuration import ConfigError
from failure_rules import hangul_ratio

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


def _ngrams(units: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]


def distinct_n(unit_lists: Iterable[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled over texts; 0.0 when there are none."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for units in unit_lists:
        grams = _ngrams(units, n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _char_units(text: str) -> str:
    return _collapse_whitespace(text)


def _word_units(text: str) -> list[str]:
    return text.lower().split()


# --- pairwise distance ---------------------------------------------------------


def char_trigram_set(text: str) -> set[str]:
    """Character 3-grams of the lowercased, whitespace-collapsed text."""
    text = _collapse_whitespace(text.lower())
    if 0 < len(text) < 3:
        return {text}  # a very short text is still something, not an empty set equal to every other
    return {text[i:i + 3] for i in range(len(text) - 2)}


def jaccard_distance(left: set[str], right: set[str]) -> float:
    """1 - |intersection| / |union|; two empty sets are identical (0.0)."""
    union = left | right
    return 1.0 - len(left & right) / len(union) if union else 0.0


def sample_for_pairs(texts: Sequence[str], sample_size: int, seed: int) -> list[str]:
    """At most sample_size texts, chosen reproducibly, so pair counts stay bounded."""
    if sample_size < 2:
        raise ValueError(f"sample_size must be at least 2, got {sample_size}")
    if len(texts) <= sample_size:
        return list(texts)
    return random.Random(seed).sample(list(texts), sample_size)


def pairwise_jaccard_distance(texts: Sequence[str], sample_size: int = 200, seed: int = 0) -> float | None:
    """Mean trigram Jaccard distance over all pairs of a sample; None for fewer than 2 texts."""
    sets = [char_trigram_set(text) for text in sample_for_pairs(texts, sample_size, seed)]
    distances = [jaccard_distance(a, b) for a, b in combinations(sets, 2)]
    return statistics.fmean(distances) if distances else None


# --- parent comparisons --------------------------------------------------------


def _parent_pairs(texts: list[str], parents: Sequence[str | None] | None) -> list[tuple[str, str]]:
    if parents is None:
        return []
    if len(parents) != len(texts):
        raise ValueError(f"parents has {len(parents)} items but texts has {len(texts)}")
    # An empty parent has no length to grow from and no language to keep.
    return [(text, parent) for text, parent in zip(texts, parents) if isinstance(parent, str) and parent]


def _mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


# --- public metrics ------------------------------------------------------------


def text_metrics(texts: list[str], parents: list[str] | None = None, *, sample_size: int = 200,
                 seed: int = 0) -> Metrics:
    """Length, diversity, language and growth metrics of texts, in one flat dict.

    parents, when given, is parallel to texts; a None or empty parent leaves its
    text out of growth_over_parent and hangul_ratio_drift only.
    """
    lengths = [len(text) for text in texts]
    chars = [_char_units(text) for text in texts]
    words = [_word_units(text) for text in texts]
    pairs = _parent_pairs(texts, parents)
    return {
        "count": len(texts),
        "mean_length": statistics.fmean(lengths) if lengths else 0.0,
        "median_length": float(statistics.median(lengths)) if lengths else 0.0,
        "growth_over_parent": _mean_or_none([len(text) / len(parent) for text, parent in pairs]),
        "distinct_1_chars": distinct_n(chars, 1),
        "distinct_2_chars": distinct_n(chars, 2),
        "distinct_1_words": distinct_n(words, 1),
        "distinct_2_words": distinct_n(words, 2),
        "pairwise_jaccard_distance": pairwise_jaccard_distance(texts, sample_size, seed),
        "hangul_ratio": statistics.fmean(hangul_ratio(text) for text in texts) if texts else 0.0,
        "hangul_ratio_drift": _mean_or_none([hangul_ratio(text) - hangul_ratio(parent) for text, parent in pairs]),
    }


def is_text(value: Any) -> bool:
    """A non-empty string: the only kind of value the metrics measure."""
    return isinstance(value, str) and bool(value.strip())


def _level_order(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)  # a non-numeric level still gets a row, after the numbered ones


def level_metrics(records: Iterable[dict], seeds: Iterable[dict], *, sample_size: int = 200, seed: int = 0,
                  field: str = "instruction") -> dict[str, dict]:
    """text_metrics of the seeds and of each evolution level, growth and drift against each record's parent.

    Rows whose field is not a non-empty string are left out of every level.
    """
    seeds, records = list(seeds), list(records)
    text_by_id = {row["id"]: row.get(field) for row in [*seeds, *records] if "id" in row}
    by_level: dict[str, tuple[list[str], list[str | None]]] = {}
    for record in records:
        if not is_text(record.get(field)):
            continue
        texts, parents = by_level.setdefault(str(record.get("level")), ([], []))
        parent = text_by_id.get(record.get("parent_id"))
        texts.append(record[field])
        parents.append(parent if is_text(parent) else None)
    seed_texts = [row[field] for row in seeds if is_text(row.get(field))]
    result = {"seed": text_metrics(seed_texts, sample_size=sample_size, seed=seed)}
    for level in sorted(by_level, key=_level_order):
        texts, parents = by_level[level]
        result[level] = text_metrics(texts, parents, sample_size=sample_size, seed=seed)
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


# --- command line --------------------------------------------------------------


class UsageError(Exception):
    """A user mistake found by the CLI; its message is one line."""


def _read_rows(path: str, field: str, required: Sequence[str] = ()) -> list[dict]:
    from records import load_table  # pulls in `datasets`; keep `import quality` light

    table = load_table(path, split="train")
    columns = list(table.column_names)
    if field not in columns:
        raise UsageError(f"--field '{field}' is not a column of {path}; columns: {', '.join(columns)}")
    missing = [name for name in required if name not in columns]
    if missing:
        raise UsageError(f"--by-level needs column(s) {', '.join(missing)} in {path}; columns: {', '.join(columns)}")
    return list(table)


def _file_metrics(path: str, args: argparse.Namespace) -> tuple[Metrics, int]:
    rows = _read_rows(path, args.field)
    texts = [row[args.field] for row in rows if is_text(row[args.field])]
    return text_metrics(texts, sample_size=args.sample_size, seed=args.seed), len(rows) - len(texts)


def _seeds_beside(path: str, field: str) -> list[dict]:
    seeds_path = Path(path).parent / "seeds.jsonl"
    if not seeds_path.is_file() or seeds_path.resolve() == Path(path).resolve():
        return []
    from records import load_table

    table = load_table(str(seeds_path), split="train")
    return list(table) if field in table.column_names else []


def _by_level_metrics(path: str, args: argparse.Namespace) -> tuple[dict[str, dict], int]:
    rows = _read_rows(path, args.field, required=("id", "level", "parent_id"))
    # Level-0 rows are seeds, so seeds.jsonl itself can be measured with --by-level too.
    seeds = [row for row in rows if row["level"] == 0] + _seeds_beside(path, args.field)
    records = [row for row in rows if row["level"] != 0]
    skipped = sum(not is_text(row[args.field]) for row in rows)
    metrics = level_metrics(records, seeds, sample_size=args.sample_size, seed=args.seed, field=args.field)
    return metrics, skipped


def _sample_size(value: str) -> int:
    number = int(value)
    if number < 2:
        raise argparse.ArgumentTypeError("must be at least 2 (pairs need two texts)")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m quality",
        description="Diversity and complexity metrics of instruction data (Korean or English), per file or per "
                    "evolution level.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="a .jsonl, .json, .csv or .parquet file")
    parser.add_argument("--field", default="instruction",
                        help="column to measure (default: instruction); rows where it is not non-empty text are "
                             "skipped and counted")
    parser.add_argument("--by-level", action="store_true",
                        help="group a run's records.jsonl by 'level' and compare each record with its parent "
                             "(found by 'parent_id', also in a seeds.jsonl next to the file)")
    parser.add_argument("--sample-size", type=_sample_size, default=200,
                        help="texts sampled for the pairwise distance, at least 2 (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of that sample (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    return parser


def _report(results: dict[str, Any], skipped: dict[str, int], args: argparse.Namespace) -> None:
    notes = [f"{path}: {count} rows skipped (empty or not text)" for path, count in skipped.items() if count]
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        for note in notes:
            print(note, file=sys.stderr)  # stdout must stay parseable JSON
        return
    if args.by_level:
        print("\n\n".join(f"{path}\n{format_table(levels)}" for path, levels in results.items()))
    else:
        print(format_table(results))
    for note in notes:
        print(note)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    measure = _by_level_metrics if args.by_level else _file_metrics
    results: dict[str, Any] = {}
    skipped: dict[str, int] = {}
    try:
        for path in args.files:
            results[path], skipped[path] = measure(path, args)
    except (ConfigError, UsageError) as exc:
        # records.load_table names run.py's --data-path flag; here the file is a positional FILE.
        print(f"error: {str(exc).removeprefix('--data-path ')}", file=sys.stderr)
        return 2
    _report(results, skipped, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
