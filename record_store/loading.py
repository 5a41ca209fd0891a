"""Reading seed data: any local file or hub dataset becomes seed rows or refusals with a reason."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from record_store.near_duplicates import NearDuplicateIndex
from record_store.store import failure_record
from settings import RunSettings
from user_errors import ConfigError

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
    from publishing.hub import hub_token

    try:  # the publishing token also opens private seed sets
        return datasets.load_dataset(data_path, split=split, token=hub_token())
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
    # With dedup on, near-duplicates are refused among the seeds too, not only among evolutions.
    near = NearDuplicateIndex(settings.dedup_threshold) if "dedup" in settings.diversity else None
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
        elif seed is not None and near and (match := near.add_unless_duplicate(row_id, row_id, seed["instruction"])):
            reason, detail = "near_duplicate", f"duplicates {match}"
        if reason:
            row = {"id": row_id, "root_id": row_id, "level": 0}
            seeds.refused.append(failure_record(row, "input", reason, detail, repr(instruction)[:500]))
            continue
        seeds.rows.append(seed)
    if near:
        near.close()
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
