"""Score a failure detector on a labeled file: `python -m failure_checks.evaluate [FILE ...]`.

A file holds responses (lines with `response`, optional `instruction`) or evolution pairs (lines with
`original` and `evolved`); every line has a `label` (`ok` or a failure class) and may have `lang` and
`split`. Printed per file, per language and per split: failure-vs-ok precision and recall, then per class
precision, recall and the confusion of labels (rows) against what the detector said (columns).

Without files it scores the committed corpus, tests/data/failure_corpus/. Rules only, no network.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from failure_checks.classify import Detector, judged, kind_of, read_lines, rules_detector
from failure_checks.rules import FailureRules
from user_errors import ConfigError

CORPUS_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "failure_corpus"
DEFAULT_FILES = (CORPUS_DIR / "responses.jsonl", CORPUS_DIR / "evolutions.jsonl")

# Built-in reasons that name a corpus class under another word.
CLASS_OF_REASON = {"unchanged": "copied"}


def class_of(reason: str | None) -> str:
    return "ok" if reason is None else CLASS_OF_REASON.get(reason, reason)


@dataclass
class Scores:
    """Labels against predictions for one slice of a file."""

    confusion: Counter = field(default_factory=Counter)  # (label, predicted class) -> count

    def add(self, label: str, predicted: str) -> None:
        self.confusion[(label, predicted)] += 1

    @property
    def total(self) -> int:
        return sum(self.confusion.values())

    def failure_precision_recall(self) -> tuple[float | None, float | None]:
        flagged = sum(n for (_, p), n in self.confusion.items() if p != "ok")
        failures = sum(n for (l, _), n in self.confusion.items() if l != "ok")
        caught = sum(n for (l, p), n in self.confusion.items() if l != "ok" and p != "ok")
        return _ratio(caught, flagged), _ratio(caught, failures)

    def class_precision_recall(self, label: str) -> tuple[float | None, float | None]:
        predicted = sum(n for (_, p), n in self.confusion.items() if p == label)
        actual = sum(n for (l, _), n in self.confusion.items() if l == label)
        right = self.confusion[(label, label)]
        return _ratio(right, predicted), _ratio(right, actual)

    def labels(self) -> list[str]:
        return _ordered({l for l, _ in self.confusion})

    def predictions(self) -> list[str]:
        return _ordered({p for _, p in self.confusion})


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _ordered(names: set[str]) -> list[str]:
    return (["ok"] if "ok" in names else []) + sorted(names - {"ok"})


def score(items: Iterable[dict], detector: Detector, slices: Callable[[dict], Iterable[str]]) -> dict[str, Scores]:
    """Scores per slice name; `slices(item)` names the slices an item belongs to (e.g. "ko", "ko/holdout")."""
    results: dict[str, Scores] = {}
    for item in items:
        predicted = class_of(detector(item))
        for name in slices(item):
            results.setdefault(name, Scores()).add(item["label"], predicted)
    return results


def standard_slices(item: dict) -> list[str]:
    lang, split = item.get("lang", "all"), item.get("split")
    names = ["all", lang] + ([f"{lang}/{split}", f"all/{split}"] if split else [])
    return list(dict.fromkeys(names))


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def format_table(title: str, results: dict[str, Scores]) -> str:
    lines = [f"== {title}", f"{'slice':<14} {'items':>5} {'fail P':>7} {'fail R':>7}"]
    for name in sorted(results, key=lambda n: (n.count("/"), n)):
        precision, recall = results[name].failure_precision_recall()
        lines.append(f"{name:<14} {results[name].total:>5} {_fmt(precision):>7} {_fmt(recall):>7}")
    overall = results["all"]
    lines.append("")
    lines.append(f"{'class (all)':<20} {'n':>4} {'P':>6} {'R':>6}")
    for label in overall.labels():
        precision, recall = overall.class_precision_recall(label)
        n = sum(c for (l, _), c in overall.confusion.items() if l == label)
        lines.append(f"{label:<20} {n:>4} {_fmt(precision):>6} {_fmt(recall):>6}")
    columns = overall.predictions()
    lines.append("")
    lines.append("confusion (rows: label, columns: detector)")
    lines.append(f"{'':<20}" + "".join(f"{c[:11]:>12}" for c in columns))
    for label in overall.labels():
        lines.append(f"{label:<20}" + "".join(f"{overall.confusion[(label, c)]:>12}" for c in columns))
    return "\n".join(lines)


def misses(items: Iterable[dict], detector: Detector, split: str | None) -> list[str]:
    """One line per item whose predicted class differs from its label (optionally one split only)."""
    out = []
    for item in items:
        if split and item.get("split") != split:
            continue
        predicted = class_of(detector(item))
        if predicted != item["label"]:
            out.append(f"{item.get('id', '?')}: label {item['label']}, detector {predicted}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failure_checks.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="labeled JSONL files (default: the committed corpus)")
    parser.add_argument("--rules", type=Path, default=None, help="a rules file (default: rules/failure_rules.yaml)")
    parser.add_argument("--judge", metavar="CONFIG", default=None,
                        help="also score rules + judge, the judge being this LLM (a preset or config file)")
    parser.add_argument("--misses", metavar="SPLIT", nargs="?", const="", default=None,
                        help="also list the items the detector gets wrong (optionally of one split, e.g. tune)")
    args = parser.parse_args(argv)
    try:
        rules = FailureRules.load(args.rules)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        for path in args.files or DEFAULT_FILES:
            items = read_lines(path, labeled=True)
            detector = rules_detector(rules, kind_of(path, items))
            print(format_table(f"{path.name}: rules", score(items, detector, standard_slices)))
            if args.misses is not None:
                print("\n".join(misses(items, detector, args.misses or None)))
            print()
            if args.judge:
                reasons, usage = judged(items, kind_of(path, items), detector, args.judge)
                by_id = {id(item): reason for item, reason in zip(items, reasons)}
                combined = score(items, lambda item: by_id[id(item)], standard_slices)
                print(format_table(f"{path.name}: rules + judge ({usage.get('calls', 0)} judge calls)", combined))
                print()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
