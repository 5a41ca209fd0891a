"""Reading seed data in every supported shape, splitting it, and the record store."""

from __future__ import annotations

import json

import pytest

from conftest import make_settings
from user_errors import ConfigError
from record_store.loading import INPUT_SEPARATOR, read_seed_set, split_train_dev
from record_store.store import DuplicateWrite, RecordStore

ROWS = [{"id": "a", "instruction": "첫 번째 질문입니다.", "input": "", "output": "답"},
        {"id": "b", "instruction": "Second task", "input": "some text", "output": "ans"},
        {"id": "c", "instruction": "", "input": "", "output": ""}]


def _write(tmp_path, name, rows=ROWS):
    import pandas as pd

    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        frame.to_parquet(path)
    elif name == "records.json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:  # pandas orient="split", as Korean Evol-Instruct seed files are written
        frame.to_json(path, orient="split", force_ascii=False)
    return path


@pytest.mark.parametrize("name", ["seed.jsonl", "seed.csv", "seed.parquet", "records.json", "split.json"])
def test_every_format_gives_the_same_rows(tmp_path, name):
    path = _write(tmp_path, name)
    seeds = read_seed_set(make_settings(tmp_path, data_path=str(path), input_field="input", response_field="output"))
    assert [r["id"] for r in seeds.rows] == ["a", "b"]
    assert seeds.rows[0]["instruction"] == "첫 번째 질문입니다." and seeds.rows[0]["reference"] == "답"
    assert seeds.rows[1]["instruction"] == f"Second task{INPUT_SEPARATOR}some text"
    assert [(f["id"], f["reason"]) for f in seeds.refused] == [("c", "empty_instruction")]


def test_row_index_is_the_id_without_an_id_column_and_duplicate_ids_stay_unique(tmp_path):
    path = _write(tmp_path, "noid.jsonl", [{"instruction": "x one"}, {"instruction": "x two"}])
    assert [r["id"] for r in read_seed_set(make_settings(tmp_path, data_path=str(path))).rows] == ["0", "1"]
    path = _write(tmp_path, "dup.jsonl", [{"id": 1, "instruction": "x one"}, {"id": 1, "instruction": "x two"}])
    assert [r["id"] for r in read_seed_set(make_settings(tmp_path, data_path=str(path))).rows] == ["1", "1#1"]


def test_one_line_errors_for_bad_paths_fields_and_lines(tmp_path):
    def error_of(**fields):
        with pytest.raises(ConfigError) as caught:
            read_seed_set(make_settings(tmp_path, **fields))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    assert "no such file" in error_of(data_path=str(tmp_path / "missing.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    assert "unsupported extension '.txt'" in error_of(data_path=str(tmp_path / "data.txt"))
    path = _write(tmp_path, "seed.jsonl")
    assert "columns: id, instruction, input, output" in error_of(data_path=str(path), instruction_field="prompt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": broken}\n', encoding="utf-8")
    assert "line 2" in error_of(data_path=str(bad))


def test_split_is_seeded_disjoint_and_checks_sizes(tmp_path):
    rows = [{"id": str(i), "instruction": f"t{i}"} for i in range(10)]
    settings = make_settings(tmp_path, train_size=4, dev_size=3)
    train, dev = split_train_dev(rows, settings)
    assert len(train) == 4 and len(dev) == 3 and not {r["id"] for r in train} & {r["id"] for r in dev}
    assert split_train_dev(rows, settings) == (train, dev)
    with pytest.raises(ConfigError, match=r"--train-size 8 \+ --dev-size 3 = 11 but the data has only 10"):
        split_train_dev(rows, make_settings(tmp_path, train_size=8, dev_size=3))


def test_store_writes_each_key_once_and_repairs_a_half_written_line(tmp_path):
    store = RecordStore(tmp_path)
    assert store.add_records([{"id": "a.L1", "level": 1, "instruction": "한글"}]) == 1
    with pytest.raises(DuplicateWrite):
        store.add_records([{"id": "a.L1", "level": 1, "instruction": "again"}])
    with open(store.records_path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "b.L1", "level": 1, "instr')  # the crash
    reopened = RecordStore(tmp_path)
    assert reopened.add_records([{"id": "b.L1", "level": 1, "instruction": "done"}]) == 1
    lines = store.records_path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a.L1", "b.L1"] and "한글" in lines[0]


def test_a_half_written_line_longer_than_the_read_block_is_dropped_too(tmp_path):
    store = RecordStore(tmp_path)
    store.add_records([{"id": "a.L1", "level": 1, "instruction": "짧은 지시"}])
    kept = store.records_path.stat().st_size
    with open(store.records_path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "b.L1", "level": 1, "response": "' + "가" * 100_000)  # 300 kB, no newline
    RecordStore(tmp_path)
    assert store.records_path.stat().st_size == kept
    store.failures_path.write_text('{"id": "c.L1", "lev', encoding="utf-8")  # only a partial line
    RecordStore(tmp_path)
    assert store.failures_path.read_text() == ""


def test_duplicate_instructions_are_recorded_failures_naming_the_first_row(tmp_path):
    rows = [{"id": "a", "instruction": "Same  task."}, {"id": "b", "instruction": "Other task."},
            {"id": "c", "instruction": "Same task."}]
    seeds = read_seed_set(make_settings(tmp_path, data_path=str(_write(tmp_path, "dups.jsonl", rows))))
    assert [r["id"] for r in seeds.rows] == ["a", "b"]
    assert [(f["id"], f["reason"], f["detail"]) for f in seeds.refused] == [("c", "duplicate_instruction", "same text as row a")]


def test_all_empty_instructions_are_each_refused_and_the_split_says_why(tmp_path):
    rows = [{"id": "a", "instruction": ""}, {"id": "b", "instruction": "   "}, {"id": "c", "instruction": None}]
    settings = make_settings(tmp_path, data_path=str(_write(tmp_path, "empty.jsonl", rows)), train_size=1, dev_size=1)
    seeds = read_seed_set(settings)
    assert seeds.rows == [] and [f["reason"] for f in seeds.refused] == ["empty_instruction"] * 3
    with pytest.raises(ConfigError, match="only 0 valid rows"):
        split_train_dev(seeds.rows, settings)
