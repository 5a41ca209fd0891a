"""`python -m run_report.metrics_cli FILE [FILE ...]`: the quality metrics of data files, see `--help`.

Each file is measured as a whole, or with --by-level per evolution level against each
record's parent (a run's records.jsonl, with the seeds.jsonl beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from run_report.metrics import Metrics, format_table, is_text, level_metrics, text_metrics
from user_errors import ConfigError


class UsageError(Exception):
    """A user mistake found by the CLI; its message is one line."""


def _read_rows(path: str, field: str, required: Sequence[str] = ()):
    """The file as a `datasets.Dataset` (memory-mapped Arrow): read it with _iter_rows."""
    from record_store.loading import load_table  # pulls in `datasets`: only when a file is read

    table = load_table(path, split="train")
    columns = list(table.column_names)
    if field not in columns:
        raise UsageError(f"--field '{field}' is not a column of {path}; columns: {', '.join(columns)}")
    missing = [name for name in required if name not in columns]
    if missing:
        raise UsageError(f"--by-level needs column(s) {', '.join(missing)} in {path}; columns: {', '.join(columns)}")
    return table


def _iter_rows(table, columns: Sequence[str]) -> Iterator[dict]:
    """The rows of a `datasets.Dataset`, restricted to those of columns it has, a batch at a time."""
    names = [name for name in dict.fromkeys(columns) if name in table.column_names]
    if not names:
        return
    for batch in table.select_columns(names).iter(batch_size=1000):
        for values in zip(*(batch[name] for name in names)):
            yield dict(zip(names, values))


def _file_metrics(path: str, args: argparse.Namespace) -> tuple[Metrics, int]:
    table = _read_rows(path, args.field)
    texts = (row[args.field] for row in _iter_rows(table, [args.field]) if is_text(row[args.field]))
    metrics = text_metrics(texts, sample_size=args.sample_size, seed=args.seed)
    return metrics, len(table) - metrics["count"]


def _seeds_beside(path: str, field: str):
    seeds_path = Path(path).parent / "seeds.jsonl"
    if not seeds_path.is_file() or seeds_path.resolve() == Path(path).resolve():
        return None
    from record_store.loading import load_table

    table = load_table(str(seeds_path), split="train")
    return table if field in table.column_names else None


def _by_level_metrics(path: str, args: argparse.Namespace) -> tuple[dict[str, dict], int]:
    table = _read_rows(path, args.field, required=("id", "level", "parent_id"))
    beside = _seeds_beside(path, args.field)
    columns = ("id", "level", "parent_id", args.field)

    def seeds() -> Iterator[dict]:
        # Level-0 rows are seeds, so seeds.jsonl itself can be measured with --by-level too.
        yield from (row for row in _iter_rows(table, columns) if row["level"] == 0)
        if beside is not None:
            yield from _iter_rows(beside, columns)

    def records() -> Iterator[dict]:
        return (row for row in _iter_rows(table, columns) if row["level"] != 0)

    skipped = sum(not is_text(row[args.field]) for row in _iter_rows(table, [args.field]))
    metrics = level_metrics(records, seeds, sample_size=args.sample_size, seed=args.seed, field=args.field)
    return metrics, skipped


def _sample_size(value: str) -> int:
    number = int(value)
    if number < 2:
        raise argparse.ArgumentTypeError("must be at least 2 (pairs need two texts)")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m run_report.metrics_cli",
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
