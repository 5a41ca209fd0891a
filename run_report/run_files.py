"""Reading a run directory for the report: run.json, and streamed summaries of its row files.

The row files are streamed, never loaded whole: a first pass keeps one length per
record, failure counters and the ids of the lineages to show; further passes collect
just those lineages' rows. Memory stays flat however large the run.
"""

from __future__ import annotations

import bisect
import json
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

MAX_DEEP_LINEAGES = 5
MAX_FAILED_LINEAGES = 3


class NotARunDirectory(Exception):
    """The directory holds no readable run.json, so there is no run to report on."""


@dataclass
class RunFiles:
    """What the report shows of a run directory: run.json, and summaries of its row files."""

    name: str
    run: dict
    unreadable_lines: dict[str, int] = field(default_factory=dict)
    """Lines of a .jsonl file that were not a JSON object, by file name (e.g. a truncated last line)."""
    record_count: int = 0
    lengths: dict[str, array] = field(default_factory=dict)
    """Instruction lengths in characters, of the seeds ('seed') and of each level's records."""
    failure_count: int = 0
    failure_counts: Counter = field(default_factory=Counter)
    """Failures by (stage, reason), in order of first appearance."""
    failure_levels: dict[tuple[str, str], Counter] = field(default_factory=dict)
    failure_details: dict[tuple[str, str], Any] = field(default_factory=dict)
    """The detail of the first failure of each (stage, reason)."""
    deepest: Any = None
    """The deepest level a record reached."""
    lineage_ends: list[str] = field(default_factory=list)
    """Ids of the records at the deepest level whose lineages are shown."""
    shown_failures: list[dict] = field(default_factory=list)
    """The failures whose lineages are shown."""
    lineage_rows: dict[str, dict] = field(default_factory=dict)
    """The seed and record rows of the shown lineages, by str(id), the last row of an id winning."""


class JsonlRows:
    """The JSON objects of a .jsonl file, read line by line each time it is iterated; a missing file is empty.

    Lines that are not a JSON object (or not UTF-8) are skipped, and counted in `unreadable` by the last pass.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable = 0

    def __iter__(self) -> Iterator[dict]:
        self.unreadable = 0
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for raw in handle:  # JSONL lines end at "\n" only; text inside may hold other line breaks
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    row = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    self.unreadable += 1
                    continue
                if isinstance(row, dict):
                    yield row
                else:
                    self.unreadable += 1


def read_run_json(run_dir: Path) -> dict:
    """run.json as a dict, or NotARunDirectory with the one-line reason."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise NotARunDirectory(f"{run_dir} has no run.json (is it a run directory?)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotARunDirectory(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(run, dict):
        raise NotARunDirectory(f"{path} does not hold a JSON object")
    return run


def scan_records(data: RunFiles, records: JsonlRows) -> None:
    """Counts records, keeps their lengths by level and picks the deepest lineages to show (by id)."""
    ends: list[str] = []
    for record in records:
        data.record_count += 1
        if isinstance(record.get("instruction"), str):
            data.lengths.setdefault(str(record.get("level")), array("q")).append(len(record["instruction"]))
        level = record.get("level") or 0
        if data.record_count == 1 or level > data.deepest:  # as max(): the first of equal maxima
            data.deepest, ends = level, []
        if level == data.deepest:
            ends.append(str(record.get("id")))
    data.lineage_ends = spread(sorted(ends), MAX_DEEP_LINEAGES)


def scan_failures(data: RunFiles, failures: JsonlRows) -> None:
    """Counts failures by (stage, reason) and level, and picks the failures whose lineages are shown."""
    best_by_reason: dict[Any, tuple] = {}  # reason -> (order key, index, failure) of its first failure
    first: list[tuple] = []  # the first few failures overall, as (order key, index, failure)
    for index, failure in enumerate(failures):
        data.failure_count += 1
        key = (str(failure.get("stage")), str(failure.get("reason")))
        data.failure_counts[key] += 1
        data.failure_levels.setdefault(key, Counter())[str(failure.get("level"))] += 1
        data.failure_details.setdefault(key, failure.get("detail"))
        entry = (failure_order(failure), index, failure)
        reason = failure.get("reason")
        if reason not in best_by_reason or entry[:2] < best_by_reason[reason][:2]:
            best_by_reason[reason] = entry
        if len(first) < 2 * MAX_FAILED_LINEAGES or entry[:2] < first[-1][:2]:
            bisect.insort(first, entry, key=lambda e: e[:2])
            del first[2 * MAX_FAILED_LINEAGES:]
    # Every reason's first failure and the first few overall are all contrasting_failures can pick
    # (failure lines are distinct: the store writes each (id, level) once).
    candidates = {entry[1]: entry for entry in [*best_by_reason.values(), *first]}
    data.shown_failures = contrasting_failures([candidates[i][2] for i in sorted(candidates)])


def collect_lineages(data: RunFiles, seeds: JsonlRows, records: JsonlRows) -> None:
    """The rows of the shown lineages: one pass over seeds and records per generation back to the root."""
    wanted = set(data.lineage_ends) | {str(f.get("parent_id")) for f in data.shown_failures}
    while wanted:
        found = {}
        for row in chain(seeds, records):
            if (key := str(row.get("id"))) in wanted:
                found[key] = row  # the last row of an id wins, as in a dict of all rows
        data.lineage_rows.update(found)
        # ancestry() follows parent_id as it is: only a string can match a str(id) key
        wanted = {parent for row in found.values()
                  if isinstance(parent := row.get("parent_id"), str) and parent not in data.lineage_rows}


def load_run(run_dir: Path) -> RunFiles:
    """run.json and summaries of the three row files of a run directory, read as streams."""
    data = RunFiles(name=run_dir.resolve().name, run=read_run_json(run_dir))
    records, failures, seeds = (JsonlRows(run_dir / f"{name}.jsonl") for name in ("records", "failures", "seeds"))
    data.lengths["seed"] = array("q", (len(s["instruction"]) for s in seeds if isinstance(s.get("instruction"), str)))
    scan_records(data, records)
    scan_failures(data, failures)
    for name, rows in (("records", records), ("failures", failures), ("seeds", seeds)):
        if rows.unreadable:
            data.unreadable_lines[f"{name}.jsonl"] = rows.unreadable
    collect_lineages(data, seeds, records)
    return data


def ancestry(parent_id: Any, by_id: dict[str, dict]) -> list[dict]:
    """The rows from the lineage's root down to parent_id; stops at an unknown id or a loop."""
    rows, seen = [], set()
    while parent_id in by_id and parent_id not in seen:
        seen.add(parent_id)
        rows.append(by_id[parent_id])
        parent_id = by_id[parent_id].get("parent_id")
    return rows[::-1]


def spread(items: list[dict], count: int) -> list[dict]:
    """count items evenly spaced over the list, so a sorted list of ids yields more than one language or source."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def failure_order(failure: dict) -> tuple:
    """Deepest first, then by id."""
    return -(failure.get("level") or 0), str(failure.get("id"))


def contrasting_failures(failures: list[dict]) -> list[dict]:
    """Up to MAX_FAILED_LINEAGES failures, deepest first, each reason once before any repeats."""
    ordered = sorted(failures, key=failure_order)
    picked: list[dict] = []
    for failure in ordered:
        if failure.get("reason") not in {p.get("reason") for p in picked}:
            picked.append(failure)
    picked = picked[:MAX_FAILED_LINEAGES]
    return picked + [f for f in ordered if f not in picked][:MAX_FAILED_LINEAGES - len(picked)]
