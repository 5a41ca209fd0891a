"""Reading seed data, splitting it, and the append-only store of results.

The dataset never lives in graph state: rows are normalised once into
`seeds.jsonl`, and every evolved record or failure is appended to JSONL files keyed
by (id, level). Graph state keeps only byte offsets and counters, so a checkpoint
stays small however large the dataset is.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configuration import ConfigError, RunSettings

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
INPUT_SEPARATOR = "\n\n### Input\n"
TEST_RUN_ROWS = 10


@dataclass
class SeedSet:
    """Valid seed rows and the rows refused at input, before any LLM call."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    """Valid rows: id, instruction, reference (optional)."""
    refused: list[dict[str, Any]] = field(default_factory=list)
    """Failure records of rows that could not be used, with their reason."""


def _pandas_split_json(path: Path) -> dict[str, list] | None:
    # Korean Evol-Instruct seed files are DataFrame.to_json(orient="split") output.
    if path.suffix != ".json":
        return None
    with open(path, encoding="utf-8") as handle:
        if handle.read(1) != "{":
            return None
        handle.seek(0)
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not (isinstance(data, dict) and {"columns", "data"} <= data.keys()):
        return None
    columns = data["columns"]
    return {name: [row[i] for row in data["data"]] for i, name in enumerate(columns)}


def _first_bad_jsonl_line(path: Path) -> str | None:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"{path}: line {number} is not valid JSON ({exc.msg})"
    return None


def load_table(data_path: str, split: str):
    """A `datasets.Dataset` from a local file or a Hugging Face dataset name."""
    import datasets  # heavy import: only when data is actually read

    datasets.disable_progress_bars()
    path = Path(data_path)
    if path.suffix.lower() in LOCAL_FORMATS or path.exists():
        if not path.is_file():
            raise ConfigError(f"--data-path {data_path}: no such file")
        builder = LOCAL_FORMATS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(f"--data-path {data_path}: unsupported extension '{path.suffix}' (use .json, .jsonl, .csv or .parquet)")
        if (columns := _pandas_split_json(path)) is not None:
            return datasets.Dataset.from_dict(columns)
        # JSON is parsed in 1 MB pieces rather than the default 10 MB: peak memory then stops
        # growing with the file at about 1 MB of text instead of 10 (-19 MB at 10k rows).
        options = {"chunksize": 1 << 20} if builder == "json" else {}
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        except Exception as exc:  # the library's message is long; find the line ourselves
            bad_line = _first_bad_jsonl_line(path) if builder == "json" else None
            raise ConfigError(bad_line or f"--data-path {data_path}: cannot be read ({type(exc).__name__})") from None
    try:
        return datasets.load_dataset(data_path, split=split)
    except Exception as exc:
        raise ConfigError(f"--data-path {data_path}: not a local file, and the hub dataset could not be loaded ({str(exc).splitlines()[0][:160]})") from None


def read_seed_set(settings: RunSettings) -> SeedSet:
    """Normalise every row into a seed or a refusal with a reason; nothing is dropped."""
    table = load_table(settings.data_path, settings.split)
    columns = list(table.column_names)
    for flag, name in (("--instruction-field", settings.instruction_field),
                       ("--input-field", settings.input_field), ("--response-field", settings.response_field)):
        if name is not None and name not in columns:
            raise ConfigError(f"{flag} '{name}' is not a column of {settings.data_path}; columns: {', '.join(columns)}")
    seeds, seen_ids, first_with_text = SeedSet(), set(), {}
    for index, row in enumerate(table):
        row_id = str(row["id"]) if "id" in columns and row["id"] is not None else str(index)
        if row_id in seen_ids:
            row_id = f"{row_id}#{index}"  # keep ids unique without losing the row
        seen_ids.add(row_id)
        instruction = row[settings.instruction_field]
        reason, detail = _refusal_reason(instruction), ""
        seed = None if reason else _seed_row(row, row_id, instruction, settings)
        if seed is not None and (first := first_with_text.setdefault(" ".join(seed["instruction"].split()), row_id)) != row_id:
            reason, detail = "duplicate_instruction", f"same text as row {first}"
        if reason:
            seeds.refused.append({"id": row_id, "root_id": row_id, "parent_id": None, "level": 0, "stage": "input",
                                  "reason": reason, "detail": detail, "raw": repr(instruction)[:500]})
            continue
        seeds.rows.append(seed)
    return seeds


def _refusal_reason(instruction: Any) -> str | None:
    # CSV reads an empty cell as None, so None and blank text are the same mistake.
    if instruction is None or (isinstance(instruction, str) and not instruction.strip()):
        return "empty_instruction"
    if not isinstance(instruction, str):
        return "non_string_instruction"
    return None


def _seed_row(row: dict, row_id: str, instruction: str, settings: RunSettings) -> dict[str, Any]:
    text = instruction.strip()
    extra = row.get(settings.input_field) if settings.input_field else None
    if isinstance(extra, str) and extra.strip():
        text = f"{text}{INPUT_SEPARATOR}{extra.strip()}"
    seed = {"id": row_id, "root_id": row_id, "parent_id": None, "level": 0, "instruction": text, "original": text}
    reference = row.get(settings.response_field) if settings.response_field else None
    if reference is not None:
        seed["reference"] = reference
    return seed


def split_train_dev(rows: list[dict], settings: RunSettings) -> tuple[list[dict], list[dict]]:
    """Shuffle with the seed; train is the first train_size rows, dev the next dev_size."""
    needed = settings.train_size + settings.dev_size
    if needed > len(rows):
        raise ConfigError(
            f"--train-size {settings.train_size} + --dev-size {settings.dev_size} = {needed} "
            f"but the data has only {len(rows)} valid rows"
        )
    shuffled = rows[:]
    random.Random(settings.seed).shuffle(shuffled)
    return shuffled[: settings.train_size], shuffled[settings.train_size : needed]


def generation_rows(rows: list[dict], settings: RunSettings) -> list[dict]:
    """Every valid row, or the first ten with --test-run."""
    return rows[:TEST_RUN_ROWS] if settings.test_run else rows


def write_atomically(path: Path, text: str) -> None:
    """Write a temp file, then rename: a crash leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _dump(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class RecordStore:
    """Append-only JSONL files of a run directory, each (id, level) written once."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seeds_path = self.directory / "seeds.jsonl"
        self.records_path = self.directory / "records.jsonl"
        self.failures_path = self.directory / "failures.jsonl"
        self._written: set[tuple[str, int]] = set()
        for path in (self.records_path, self.failures_path):
            path.touch()  # both files exist even when one stays empty
            self._repair_partial_line(path)
            for _, item in self.iter_range(path, 0, None):
                self._written.add((item["id"], item["level"]))

    @staticmethod
    def _repair_partial_line(path: Path) -> None:
        # A crash mid-write leaves a line without its newline; it is dropped and redone.
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

    def size(self, path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def iter_range(self, path: Path, start: int, end: int | None, limit: int | None = None) -> Iterator[tuple[int, dict]]:
        """Yield (offset after the line, item) for lines in [start, end)."""
        if not path.exists():
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            taken = 0
            while (end is None or handle.tell() < end) and (limit is None or taken < limit):
                line = handle.readline()
                if not line:
                    break
                taken += 1
                yield handle.tell(), json.loads(line)

    def write_seeds(self, rows: list[dict]) -> None:
        """Rewrite seeds.jsonl (it is derived from the input, so it is safe to redo)."""
        with open(self.seeds_path, "w", encoding="utf-8") as handle:
            handle.writelines(_dump(row) for row in rows)

    def append(self, path: Path, items: list[dict]) -> int:
        """Append items not written before; returns how many were new."""
        fresh = [item for item in items if (item["id"], item["level"]) not in self._written]
        if fresh:
            with open(path, "a", encoding="utf-8") as handle:
                handle.writelines(_dump(item) for item in fresh)
                handle.flush()
                os.fsync(handle.fileno())
            self._written.update((item["id"], item["level"]) for item in fresh)
        return len(fresh)

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
