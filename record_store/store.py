"""The append-only store of a run's results.

The dataset never lives in graph state: rows are normalised once into
`seeds.jsonl`, and every evolved record or failure is appended to JSONL files keyed
by (id, level). Graph state keeps only byte offsets and counters, so a checkpoint
stays small however large the dataset is.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def write_atomically(path: Path, text: str) -> None:
    """Write a temp file, flush it to disk, then rename: a crash leaves the old file or the new one, never half of one."""
    _replace_durably(path, lambda handle: handle.write(text))


def _replace_durably(path: Path, write: Callable[[IO[str]], object]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def failure_record(item: dict, stage: str, reason: str, detail: str, raw: str) -> dict:
    """The failures.jsonl line for an item eliminated at `stage` (input, evolve, diversity or respond)."""
    failure = {"id": item["id"], "root_id": item["root_id"], "parent_id": item.get("parent_id"), "level": item["level"],
               "stage": stage, "reason": reason, "detail": detail, "instruction": item.get("instruction"), "raw": raw}
    for optional in ("added_by", "in_dedup_index"):  # the latter: near_duplicates.IN_DEDUP_INDEX
        if item.get(optional):
            failure[optional] = item[optional]
    return failure


def repair_partial_line(path: Path) -> None:
    """Drop a last line without its newline: a crash mid-write left it, and it is redone."""
    # Only the tail is read: the file may be far larger than memory should hold.
    with open(path, "rb+") as handle:
        size = end = handle.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                if start + newline + 1 < size:
                    handle.truncate(start + newline + 1)
                return
            end = start
        handle.truncate(0)


def _dump(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class DuplicateWrite(RuntimeError):
    """A second write of one (id, level): a bug in whatever made the item, never a user's mistake."""


class RecordStore:
    """Append-only JSONL files of a run directory, each (id, level) written once."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seeds_path = self.directory / "seeds.jsonl"
        self.records_path = self.directory / "records.jsonl"
        self.failures_path = self.directory / "failures.jsonl"
        self._written: set[tuple[str, int]] = set()
        self._written_earlier: set[tuple[str, int]] = set()
        """Keys on disk when the store was opened, or adopted from a Ray shard: another invocation or process wrote them."""
        self._tallies: dict[Path, Counter] = {self.records_path: Counter(), self.failures_path: Counter()}
        self._added: Counter = Counter()
        for path in (self.records_path, self.failures_path):
            path.touch()  # both files exist even when one stays empty
            repair_partial_line(path)
            self._note_written(path, [item for _, item in self.iter_range(path, 0, None)])
        self._written_earlier = set(self._written)

    def _note_written(self, path: Path, items: list[dict]) -> None:
        for item in items:
            self._written.add((item["id"], item["level"]))
            self._tallies[path][item["level"]] += 1
            self._added[item["level"]] += bool(item.get("added_by"))

    def is_written(self, item_id: str, level: int) -> bool:
        """Whether (id, level) already has its record or failure: resume skips it."""
        return (item_id, level) in self._written

    def written_earlier(self, item_id: str, level: int) -> bool:
        """Whether an earlier invocation (or a Ray worker) wrote (id, level): a parent done again may offer it, and skips it."""
        return (item_id, level) in self._written_earlier

    def level_tally(self, level: int) -> dict[str, int]:
        """Records, failures, and outputs of items a diversity step added, written for one level."""
        return {"records": self._tallies[self.records_path][level], "failures": self._tallies[self.failures_path][level],
                "added": self._added[level]}

    def size(self, path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def iter_range(self, path: Path, start: int, end: int | None) -> Iterator[tuple[int, dict]]:
        """Yield (offset after the line, item) for lines in [start, end)."""
        if not path.exists():
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            while end is None or handle.tell() < end:
                line = handle.readline()
                if not line:
                    break
                yield handle.tell(), json.loads(line)

    def write_input(self, seeds: list[dict], refused: list[dict]) -> None:
        """Write seeds.jsonl and the rows refused at load, durably: the first level boundary is the load.

        seeds.jsonl is derived from the input, so it is replaced whole (temp file, fsync, rename); a load
        done again after a kill finds its refusals already written and adds only those it lacks.
        """
        _replace_durably(self.seeds_path, lambda handle: handle.writelines(_dump(row) for row in seeds))
        self.add_failures([row for row in refused if not self.is_written(row["id"], row["level"])])
        self.sync()

    def append(self, path: Path, items: list[dict]) -> int:
        """Append items, in one write; returns how many.

        Each (id, level) is written once: an item already written, or twice in `items`, raises
        DuplicateWrite and nothing is written, since dropping one would lose data in silence. A
        resume skips what is written (`is_written`) before it writes. The write reaches the kernel
        before this returns, so a killed process loses nothing it was told is written; `sync` at
        level boundaries makes it durable against power loss too.
        """
        keys = [(item["id"], item["level"]) for item in items]
        if len(set(keys)) < len(keys) or not self._written.isdisjoint(keys):
            twice = next(key for n, key in enumerate(keys) if key in self._written or key in keys[:n])
            raise DuplicateWrite(f"{path.name}: (id {twice[0]!r}, level {twice[1]}) is already written")
        if items:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("".join(_dump(item) for item in items))
            self._note_written(path, items)
        return len(items)

    def adopt(self, path: Path, items: list[dict]) -> int:
        """Append lines another writer wrote (a Ray worker's shard), but those already here; returns how many.

        A parent done again after a kill treats them as written earlier, like lines on disk at open.
        """
        fresh = [item for item in items if not self.is_written(item["id"], item["level"])]
        self.append(path, fresh)
        self._written_earlier.update((item["id"], item["level"]) for item in fresh)
        return len(fresh)

    def sync(self) -> None:
        """Flush the result files to disk (once per level: an fsync per item would cost milliseconds each)."""
        for path in (self.records_path, self.failures_path):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())

    def add_records(self, items: list[dict]) -> int:
        return self.append(self.records_path, items)

    def add_failures(self, items: list[dict]) -> int:
        return self.append(self.failures_path, items)

    def count_by_level(self) -> dict[str, Any]:
        """Records (and lenient parses) per level and failures per stage and reason, read from the files."""
        records, lenient = Counter(), Counter()
        for _, item in self.iter_range(self.records_path, 0, None):
            records[str(item["level"])] += 1
            lenient[str(item["level"])] += item.get("parse") == "lenient"
        failures: dict[str, Counter] = {}
        for _, item in self.iter_range(self.failures_path, 0, None):
            failures.setdefault(item["stage"], Counter())[item["reason"]] += 1
        return {"records_per_level": dict(sorted(records.items())),
                "lenient_parses_per_level": dict(sorted(lenient.items())),
                "failures_per_stage": {stage: dict(c) for stage, c in sorted(failures.items())}}
