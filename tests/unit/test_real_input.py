"""Issue 18, "wrong answers to real input": each file a user really has loads correctly, or stops the run
in one `error:` line naming the file, row or flag and the cause (exit 2), before any LLM request.

The run goes through `run.main` with its LLM config pointed at a loopback endpoint that counts requests.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import make_settings
from counting_endpoint import endpoint, run_expecting_error  # noqa: F401 (a fixture)
from record_store.loading import read_seed_set
from run import main
from run_checks import check_run

KOREAN = ["서울의 겨울 날씨를 설명하세요.", "김치찌개 끓이는 법을 알려 주세요.", "광합성이 무엇인지 초등학생에게 설명하세요.",
          "조선 시대의 과거 제도를 요약하세요.", "파이썬으로 리스트를 정렬하는 방법은?", "한강의 다리 다섯 개를 나열하세요.",
          "운동이 건강에 좋은 이유 세 가지를 쓰세요.", "이메일로 회의 일정을 정중하게 미루는 글을 쓰세요.",
          "태양계 행성을 크기 순서로 말해 주세요.", "한글을 만든 사람과 그 이유를 설명하세요.",
          "커피와 녹차의 차이점을 비교하세요.", "지하철 노선도를 읽는 요령을 알려 주세요.",
          "봄에 피는 꽃 네 가지를 소개하세요.", "은행 계좌를 여는 절차를 단계별로 쓰세요."]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def korean_file(tmp_path, shape: str, encoding: str):
    rows = [{"id": f"k{i}", "instruction": text} for i, text in enumerate(KOREAN)]
    if shape == "jsonl":
        text, name = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "seeds.jsonl"
    elif shape == "json":
        text, name = json.dumps(rows, ensure_ascii=False, indent=1), "seeds.json"
    elif shape == "split":
        text = json.dumps({"columns": ["id", "instruction"], "index": list(range(len(rows))),
                           "data": [[row["id"], row["instruction"]] for row in rows]}, ensure_ascii=False)
        name = "seeds.json"
    else:
        text = "id,instruction\r\n" + "".join(f'{row["id"]},"{row["instruction"]}"\r\n' for row in rows)
        name = "seeds.csv"
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


DETECTED = {"cp949": "cp949", "euc-kr": "cp949", "utf-16": "utf_16", "utf-16-le": "utf_16_le", "utf-8-sig": "utf_8_sig"}


@pytest.mark.parametrize("encoding", DETECTED)
@pytest.mark.parametrize("shape", ["jsonl", "json", "split", "csv"])
def test_a_korean_file_in_a_legacy_encoding_loads_every_row_and_says_how(tmp_path, capsys, shape, encoding):
    path = korean_file(tmp_path, shape, encoding)
    before = digest(path)
    seeds = check_run(make_settings(tmp_path, data_path=str(path)))
    assert [row["instruction"] for row in seeds.rows] == KOREAN
    assert [row["id"] for row in seeds.rows] == [f"k{i}" for i in range(len(KOREAN))]
    notes = [line for line in capsys.readouterr().err.splitlines() if "not UTF-8, read as" in line]
    assert len(notes) == 1 and str(path) in notes[0] and f"read as {DETECTED[encoding]} " in notes[0]
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_utf8_file_is_read_in_place_without_a_note(tmp_path, capsys):
    path = korean_file(tmp_path, "jsonl", "utf-8")
    assert len(check_run(make_settings(tmp_path, data_path=str(path))).rows) == len(KOREAN)
    assert "read as" not in capsys.readouterr().err


def test_a_json_object_of_lists_is_read_as_columns(tmp_path):
    path = tmp_path / "columns.json"
    path.write_text(json.dumps({"instruction": [f"Explain topic number {i} to a child." for i in range(60)],
                                "output": [f"answer {i}" for i in range(60)]}), encoding="utf-8")
    seeds = read_seed_set(make_settings(tmp_path, data_path=str(path), response_field="output", diversity=["none"]))
    assert len(seeds.rows) == 60 and seeds.rows[59]["instruction"] == "Explain topic number 59 to a child."
    assert seeds.rows[59]["reference"] == "answer 59"


def test_a_json_object_of_lists_of_unequal_length_is_refused_naming_them(endpoint, tmp_path, capsys):
    path = tmp_path / "columns.json"
    path.write_text(json.dumps({"instruction": ["a b c"] * 60, "output": ["x"] * 59}), encoding="utf-8")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(path))
    assert "columns.json" in error and "'instruction' 60" in error and "'output' 59" in error


FILE_MISTAKES = {
    "empty": ("seeds.jsonl", b"", "the file is empty"),
    "blank lines": ("seeds.jsonl", b"\n\n   \n\n", "only blank lines"),
    "blank csv": ("seeds.csv", b"\r\n\r\n", "only blank lines"),
    "header only": ("seeds.csv", b"instruction\n", "no data rows"),
    "ragged csv": ("seeds.csv", b"instruction,source\nWrite a poem.,web\nWrite a song.,web,extra\n",
                   "line 3 has 3 fields but the header has 2"),
    "array lines": ("seeds.jsonl", b'["Write a poem.", "x"]\n["Write a song.", "y"]\n', "line 1 is an array"),
    "bad line": ("seeds.jsonl", b'{"instruction": "Write a poem."}\n{"instruction": "Write\n', "line 2 is not valid"),
    "trailing comma": ("seeds.json", b'[\n{"instruction": "Write a poem."},\n{"instruction": "Write a song."},\n]\n',
                       "line 3: a comma before the closing bracket"),
    "array of strings": ("seeds.json", b'["Write a poem.", "Write a song."]', "element 0 of the JSON array is a str"),
    "short split row": ("seeds.json", b'{"columns": ["id", "instruction"], "data": [["1", "Write a poem."], ["2"]]}',
                        "row 1 of 'data' has 1 values, but there are 2 columns"),
    "not text": ("seeds.jsonl", bytes(range(256)) * 8, "no text encoding fits"),
}


@pytest.mark.parametrize("mistake", FILE_MISTAKES)
def test_a_broken_file_is_one_line_naming_it_and_the_cause(endpoint, tmp_path, capsys, mistake):
    name, content, needle = FILE_MISTAKES[mistake]
    path = tmp_path / name
    path.write_bytes(content)
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(path))
    assert str(path) in error and needle in error
    assert not any(word in error for word in ("StopIteration", "DatasetGenerationError", "ValueError"))
    assert path.read_bytes() == content


def test_a_directory_as_data_path_is_called_a_directory(endpoint, tmp_path, capsys):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(folder))
    assert "is a directory" in error and "no such file" not in error


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_semicolon_or_tab_csv_is_read_with_its_separator_and_says_so(tmp_path, capsys, separator):
    path = tmp_path / "excel.csv"
    lines = [f"id{separator}instruction"] + [f"{i}{separator}{text}" for i, text in enumerate(KOREAN)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seeds = check_run(make_settings(tmp_path, data_path=str(path)))
    assert [row["id"] for row in seeds.rows] == [str(i) for i in range(14)]
    assert "-separated" in capsys.readouterr().err


REFUSED_ROWS = [{"instruction": ["a", "list"]}] * 5 + [{"instruction": {"nested": "object"}}] * 4 + \
    [{"instruction": "  "}, {"prompt": "no instruction at all"}]


def refused_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in REFUSED_ROWS), encoding="utf-8")
    return path


@pytest.mark.parametrize("args", [[], ["--max-steps", "0"], ["--dry-run"]])
def test_when_every_row_is_refused_the_run_stops_with_counts_and_writes_every_refusal(endpoint, tmp_path, capsys,
                                                                                      args):
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(refused_file(tmp_path)), *args)
    failures = tmp_path / "out" / "failures.jsonl"
    assert "all 11 rows were refused: 9 non_string_instruction, 2 empty_instruction" in error and str(failures) in error
    written = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
    assert sorted(int(r["id"]) for r in written) == list(range(11))
    assert all(r["stage"] == "input" for r in written)


def test_after_the_data_is_fixed_the_refusals_of_the_stopped_check_are_not_counted_twice(endpoint, tmp_path, capsys):
    run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(refused_file(tmp_path)))
    assert (tmp_path / "out" / "failures.jsonl").is_file()
    assert main(["--dry-run", "--quiet", "--save-path", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "failures.jsonl").exists()


def test_an_earlier_runs_failures_are_never_replaced_by_the_check(endpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text("{}", encoding="utf-8")
    (out / "failures.jsonl").write_text('{"id": "7", "stage": "evolve"}\n', encoding="utf-8")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(refused_file(tmp_path)))
    assert "all 11 rows were refused" in error and "holds an earlier run" in error
    assert (out / "failures.jsonl").read_text(encoding="utf-8") == '{"id": "7", "stage": "evolve"}\n'


def test_too_few_valid_rows_names_the_refusals_too(endpoint, tmp_path, capsys):
    path = tmp_path / "few.jsonl"
    rows = REFUSED_ROWS + [{"instruction": "Write a haiku about rain."}, {"instruction": "Name three rivers."}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", str(path))
    assert "only 2 valid rows" in error and "11 refused: 9 non_string_instruction, 2 empty_instruction" in error
