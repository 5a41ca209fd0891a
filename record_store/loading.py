"""Reading seed data: any local file or hub dataset becomes seed rows or refusals with a reason."""

from __future__ import annotations

import csv
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from record_store.encodings import readable_text
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
    notes: list[str] = field(default_factory=list)
    """One line each on what reading did for the user (an encoding detected, ids renamed), for the check to print."""


def _pandas_split_json(path: Path, data: Any) -> dict[str, list] | None:
    # Korean Evol-Instruct seed files are DataFrame.to_json(orient="split") output.
    if not (isinstance(data, dict) and {"columns", "data"} <= data.keys()):
        return None
    columns, rows = data["columns"], data["data"]
    if not (isinstance(columns, list) and isinstance(rows, list)):
        raise ConfigError(f"{path}: 'columns' and 'data' must be lists (pandas orient=\"split\")")
    for number, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            size = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            raise ConfigError(f"{path}: row {number} of 'data' has {size}, but there are {len(columns)} columns")
    return {str(name): [row[i] for row in rows] for i, name in enumerate(columns)}


def _columns_of_lists(path: Path, data: Any) -> dict[str, list] | None:
    # {"instruction": [...], "output": [...]} is a table by columns, as pandas' orient="list" writes it.
    if not (isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values())):
        return None
    lengths = {key: len(values) for key, values in data.items()}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"'{key}' {length}" for key, length in lengths.items())
        raise ConfigError(f"{path}: a JSON object of lists is read as columns, but the lists differ in length ({sizes})")
    return data


def _whole_json_document(path: Path, text_path: Path) -> Any | None:
    """The file's one JSON value, or None for JSON lines (one value a line), which are never read whole."""
    with open(text_path, encoding="utf-8") as handle:
        first = next(line for line in handle if line.strip())
        if first.lstrip().startswith("{"):
            try:
                value = json.loads(first)
            except json.JSONDecodeError:
                value = None  # an object over several lines: a whole document
            else:
                return value if not any(line.strip() for line in handle) else None
    text = text_path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return None  # a value a line: JSON lines, checked line by line
        before = text[: exc.pos].rstrip()
        if exc.msg.startswith("Expecting") and before.endswith(","):
            line = before.count("\n") + 1
            raise ConfigError(f"{path}: line {line}: a comma before the closing bracket (JSON allows no trailing "
                              "comma)") from None
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _check_json_lines(path: Path, text_path: Path) -> None:
    """Every non-blank line is one JSON object; the first one that is not is named."""
    with open(text_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                kind = "an array" if isinstance(value, list) else f"a {type(value).__name__}"
                raise ConfigError(f"{path}: line {number} is {kind}, not an object: each line must be one JSON "
                                  'object such as {"instruction": "..."}')


def _csv_separator(path: Path, text_path: Path) -> str:
    """The field separator: a comma, or the ';' or tab a one-column header reveals (Excel exports them)."""
    with open(text_path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    if len(header) == 1:
        for separator in (";", "\t"):
            if separator in header[0]:
                return separator
    return ","


def _check_csv_rows(path: Path, text_path: Path, separator: str) -> None:
    """A header and at least one data row, every row with as many fields as the header."""
    with open(text_path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=separator)
        header = next(reader, None)
        rows = 0
        for row in reader:
            if not row:
                continue
            rows += 1
            if len(row) != len(header):
                raise ConfigError(f"{path}: line {reader.line_num} has {len(row)} fields but the header has "
                                  f"{len(header)} ({', '.join(header)})")
    if not rows:
        raise ConfigError(f"{path}: has a header line but no data rows")


def _json_document_table(path: Path, text_path: Path):
    """A table built from a whole-document object (split, columns, one record); None leaves an array of
    objects or JSON lines, both checked here, to `datasets`."""
    import datasets

    document = _whole_json_document(path, text_path)
    if isinstance(document, dict):
        columns = _pandas_split_json(path, document) or _columns_of_lists(path, document)
        return datasets.Dataset.from_dict(columns if columns is not None else {k: [v] for k, v in document.items()})
    if isinstance(document, list):
        if (bad := next((i for i, row in enumerate(document) if not isinstance(row, dict)), None)) is not None:
            raise ConfigError(f"{path}: element {bad} of the JSON array is a {type(document[bad]).__name__}, "
                              "not an object")
    elif document is None:
        _check_json_lines(path, text_path)
    else:
        raise ConfigError(f"{path}: holds a single JSON {type(document).__name__}, not rows (use an array of "
                          "objects, or one object a line)")
    return None


def _read_local(path: Path, builder: str, notes: list[str]):
    import datasets

    text_path = path
    if builder in ("json", "csv"):
        text_path = readable_text(path, notes)
        if text_path.stat().st_size == 0:
            raise ConfigError(f"--data-path {path}: the file is empty")
        if not _has_text(text_path):
            raise ConfigError(f"--data-path {path}: the file holds only blank lines")
    options: dict[str, Any] = {}
    if builder == "json":
        if (table := _json_document_table(path, text_path)) is not None:
            return table
        # JSON is parsed in 1 MB pieces rather than the default 10 MB: peak memory then stops
        # growing with the file at about 1 MB of text instead of 10 (-19 MB at 10k rows).
        options = {"chunksize": 1 << 20}
    elif builder == "csv":
        separator = _csv_separator(path, text_path)
        if separator != ",":
            options["sep"] = separator
            notes.append(f"--data-path {path}: read as {'tab' if separator == chr(9) else repr(separator)}-separated "
                         "(the header has no comma)")
        _check_csv_rows(path, text_path, separator)
    if text_path != path:  # the copy's Arrow cache lives and goes with the copy, not in the user's HF cache
        options["cache_dir"] = str(text_path.parent / "datasets_cache")
    try:
        return datasets.load_dataset(builder, data_files=str(text_path), split="train", **options)
    except Exception as exc:  # the library's message is long and names its own classes: keep its cause
        cause = next((line for line in str(exc.__cause__ or exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"--data-path {path}: cannot be read ({cause[:200]})") from None


def _has_text(path: Path) -> bool:
    with open(path, encoding="utf-8") as handle:
        return any(line.strip() for line in handle)


def load_table(data_path: str, split: str, notes: list[str] | None = None):
    """A `datasets.Dataset` from a local file or a Hugging Face dataset name.

    What was done to read it (an encoding, a separator) goes to `notes`, or to stderr without one.
    """
    import datasets  # heavy import: only when data is actually read

    datasets.disable_progress_bars()
    path = Path(data_path)
    if path.suffix.lower() in LOCAL_FORMATS or path.exists():
        if path.is_dir():
            raise ConfigError(f"--data-path {data_path}: is a directory; name a .json, .jsonl, .csv or .parquet file")
        if not path.is_file():
            raise ConfigError(f"--data-path {data_path}: no such file")
        builder = LOCAL_FORMATS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(f"--data-path {data_path}: unsupported extension '{path.suffix}' (use .json, .jsonl, .csv or .parquet)")
        printed = notes is None
        notes = [] if notes is None else notes
        table = _read_local(path, builder, notes)
        if split != "train":
            notes.append(f"--split {split} is ignored: {data_path} is a local file, read whole")
        if printed:
            for note in notes:
                print(note, file=sys.stderr)
        return table
    from publishing.hub import hub_token

    try:  # the publishing token also opens private seed sets
        return datasets.load_dataset(data_path, split=split, token=hub_token())
    except Exception as exc:
        raise ConfigError(f"--data-path {data_path}: not a local file, and the hub dataset could not be loaded ({str(exc).splitlines()[0][:160]})") from None


def read_seed_set(settings: RunSettings) -> SeedSet:
    """Normalise every row into a seed or a refusal with a reason; nothing is dropped."""
    seeds = SeedSet()
    table = load_table(settings.data_path, settings.split, seeds.notes)
    columns = list(table.column_names)
    for flag, name in (("--instruction-field", settings.instruction_field),
                       ("--input-field", settings.input_field), ("--response-field", settings.response_field)):
        if name is not None and name not in columns:
            raise ConfigError(f"{flag} '{name}' is not a column of {settings.data_path}; columns: {', '.join(columns)}")
    seen_ids, renamed, first_with_text = set(), [], {}
    # With dedup on, near-duplicates are refused among the seeds too, not only among evolutions.
    near = NearDuplicateIndex(settings.dedup_threshold) if "dedup" in settings.diversity else None
    for index, row in enumerate(table):
        row_id = str(row["id"]) if "id" in columns and row["id"] is not None else str(index)
        if row_id in seen_ids:
            renamed.append(row_id := f"{row_id}#{index}")  # keep ids unique without losing the row
        seen_ids.add(row_id)
        _check_input_text(row, index, settings)
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
    if renamed:
        seeds.notes.append(f"--data-path {settings.data_path}: {len(renamed)} rows repeat an earlier row's id; "
                           f"they are kept as <id>#<row number> (first: {renamed[0]})")
    return seeds


def _check_input_text(row: dict, index: int, settings: RunSettings) -> None:
    # An input that is not text cannot be appended to an instruction: a wrong column, not a bad row.
    value = row.get(settings.input_field) if settings.input_field else None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"--input-field '{settings.input_field}' holds {type(value).__name__} values, not text "
                          f"(row {index}: {repr(value)[:60]}); name a text column")


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
