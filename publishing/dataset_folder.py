"""SAVE_PATH/dataset/: a run's records as a Hugging Face dataset folder (parquet per level, card, settings).

Everything is read from the run directory's files, never from graph state, so `--publish-only DIR`
rebuilds the same folder from a finished run. Records are streamed in batches, so memory stays flat
however large the run is.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from publishing.languages import LanguageTally
from record_store.run_directory import Manifest
from record_store.store import write_atomically
from run_report.run_files import JsonlRows, NotARunDirectory, read_run_json
from user_errors import ConfigError

DATASET_DIR = "dataset"
OPTIONS_FILE = "publish.json"
SETTINGS_FILE = "run_settings.json"
BATCH_ROWS = 1000
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


@dataclass
class FolderContents:
    """What the card says about the rows: counts, samples, languages and elimination reasons."""

    rows_per_level: dict[int, int] = field(default_factory=dict)
    """Rows written per level; a level where every item failed has 0 rows and no file."""
    sample_per_level: dict[int, dict] = field(default_factory=dict)
    """The first row of each level, shown in the card."""
    languages: list[str] = field(default_factory=list)
    """Language codes detected from the rows' text."""
    failures_per_level: dict[int, Counter] = field(default_factory=dict)
    """Elimination reasons and their counts per level, from failures.jsonl."""
    has_reference: bool = False
    """Whether the run kept the seeds' original answers as `reference`."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows_per_level.values())

    @property
    def levels_with_rows(self) -> list[int]:
        # datasets cannot load a split without rows, so empty levels get no file and no config.
        return [level for level, rows in self.rows_per_level.items() if rows]


def schema(with_reference: bool, with_reasoning: bool = False) -> pa.Schema:
    text = [("id", pa.string()), ("root_id", pa.string()), ("parent_id", pa.string()), ("level", pa.int64()),
            ("instruction", pa.string()), ("response", pa.string()), ("original", pa.string())]
    extra = [("reference", pa.string())] if with_reference else []
    extra += [("reasoning", pa.string())] if with_reasoning else []
    return pa.schema([*text, *extra, ("method_id", pa.string()), ("lineage", pa.string()),
                      ("messages", pa.list_(MESSAGE))])


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def dataset_row(record: dict, with_reference: bool, with_reasoning: bool = False) -> dict:
    """One record as a dataset row; `messages` is the chat a trainer takes as it is."""
    row = {"id": str(record["id"]), "root_id": _as_text(record.get("root_id")),
           "parent_id": _as_text(record.get("parent_id")), "level": int(record["level"]),
           "instruction": record["instruction"], "response": record["response"],
           "original": _as_text(record.get("original"))}
    if with_reference:
        row["reference"] = _as_text(record.get("reference"))
    if with_reasoning:  # a reasoning model's trace of the response (--keep-reasoning), for distillation
        row["reasoning"] = record.get("reasoning")
    # "depth": evolved from its parent; "breadth": a new instruction a breadth step wrote.
    row["method_id"] = record.get("method_id")
    row["lineage"] = record.get("lineage") or "depth"
    row["messages"] = [{"role": "user", "content": record["instruction"]},
                       {"role": "assistant", "content": record["response"]}]
    return row


def level_path(level: int) -> str:
    return f"data/level_{level}/train.parquet"


class LevelWriters:
    """One parquet writer per level, opened on the level's first row and fed in batches."""

    def __init__(self, folder: Path, row_schema: pa.Schema) -> None:
        self.folder, self.schema = folder, row_schema
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.pending: dict[int, list[dict]] = {}

    def add(self, row: dict) -> None:
        batch = self.pending.setdefault(row["level"], [])
        batch.append(row)
        if len(batch) >= BATCH_ROWS:
            self._flush(row["level"])

    def _flush(self, level: int) -> None:
        if level not in self.writers:
            path = self.folder / level_path(level)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[level] = pq.ParquetWriter(path, self.schema)
        self.writers[level].write_table(pa.Table.from_pylist(self.pending[level], schema=self.schema))
        self.pending[level] = []

    def close(self) -> None:
        for level, rows in self.pending.items():
            if rows:
                self._flush(level)
        for writer in self.writers.values():
            writer.close()


def write_rows(run_dir: Path, folder: Path, levels: list[int], with_reference: bool,
               with_reasoning: bool = False) -> FolderContents:
    """Streams records.jsonl into one parquet file per level; counts, samples and languages on the way."""
    contents, languages = FolderContents(rows_per_level=dict.fromkeys(levels, 0), has_reference=with_reference), \
        LanguageTally()
    writers = LevelWriters(folder, schema(with_reference, with_reasoning))
    try:
        for record in JsonlRows(run_dir / "records.jsonl"):
            row = dataset_row(record, with_reference, with_reasoning)
            writers.add(row)
            contents.rows_per_level[row["level"]] = contents.rows_per_level.get(row["level"], 0) + 1
            contents.sample_per_level.setdefault(row["level"], row)
            languages.add(f"{row['instruction']}\n{row['response']}")
    finally:
        writers.close()
    contents.rows_per_level = dict(sorted(contents.rows_per_level.items()))
    contents.languages = languages.codes()
    for failure in JsonlRows(run_dir / "failures.jsonl"):
        contents.failures_per_level.setdefault(int(failure.get("level", 0)), Counter())[failure.get("reason")] += 1
    return contents


def read_options(run_dir: Path) -> dict:
    """The publishing options saved beside the run (the licence); empty when none were given."""
    path = run_dir / OPTIONS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def save_options(run_dir: Path, license_id: str | None, repo_id: str | None) -> None:
    """Keep --license and --push-to-hub beside the run for the finalizer and --publish-only; None keeps the saved value."""
    if license_id is not None and not LICENSE_ID.match(license_id):
        raise ConfigError(f"--license '{license_id}': use a Hub licence id such as apache-2.0, cc-by-4.0, mit or other")
    given = {key: value for key, value in (("license", license_id), ("repo_id", repo_id)) if value is not None}
    if given:
        run_dir.mkdir(parents=True, exist_ok=True)
        Manifest(run_dir).claim(OPTIONS_FILE)
        write_atomically(run_dir / OPTIONS_FILE, json.dumps({**read_options(run_dir), **given}, ensure_ascii=False))


def build_dataset_folder(run_dir: str | Path) -> Path:
    """Builds RUN_DIR/dataset/ from run.json, records.jsonl and failures.jsonl; returns its path.

    The folder is built beside the old one and swapped in at the end: a failure leaves the previous folder.
    """
    from publishing.card import render_card, shareable_settings

    run_dir = Path(run_dir)
    try:
        run = read_run_json(run_dir)
    except NotARunDirectory as exc:
        raise ConfigError(str(exc)) from None
    final, building = run_dir / DATASET_DIR, run_dir / f".{DATASET_DIR}.building"
    manifest = Manifest(run_dir)
    if foreign := manifest.foreign_files(DATASET_DIR):  # the user's files are never replaced
        raise ConfigError(f"{foreign[0]} was not written by autoevol: move it out of {final}/ and build again "
                          f"(--publish-only {run_dir})")
    manifest.claim(f"{building.name}/")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    levels = [int(level) for level in run["counts"]["levels"] if level != "0"]
    contents = write_rows(run_dir, building, levels, with_reference=bool(run["settings"].get("response_field")),
                          with_reasoning=bool(run["settings"].get("keep_reasoning")))
    options = read_options(run_dir)
    license_id = options.get("license")
    card = render_card(run, contents, license_id, options.get("repo_id"))
    (building / "README.md").write_text(card, encoding="utf-8")
    settings = shareable_settings(run, license_id)
    (building / SETTINGS_FILE).write_text(json.dumps(settings, ensure_ascii=False, indent=2), encoding="utf-8")
    built = [path.relative_to(building) for path in building.rglob("*")]
    manifest.claim(f"{DATASET_DIR}/", *(f"{DATASET_DIR}/{path.as_posix()}" + ("/" if (building / path).is_dir() else "")
                                       for path in built))
    shutil.rmtree(final, ignore_errors=True)  # every file in it is the tool's (checked above)
    building.rename(final)
    return final
