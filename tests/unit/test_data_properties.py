"""Two properties over whole command sequences (issue 18, "Done when" (b) and (c)).

(b) No run deletes, truncates or rewrites a file it did not create: user files planted in the save
    path, in dataset/ and an input file inside the save path keep their bytes and mtime through a fresh
    run, a crash and resume, refused runs, --publish-only, a rebuild and --overwrite.
(c) Every row of every input file ends in seeds.jsonl and its lineage (records.jsonl or failures.jsonl
    at each level), in failures.jsonl as an input refusal, or in a one-line refusal of the whole run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from conftest import REPO, make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder, instruction_of, task_of
from llm_access.client import FatalLLMError
from test_resume import CrashAfter
from user_errors import ConfigError


def fingerprints(paths: list[Path]) -> dict[str, tuple[bytes, int]]:
    return {str(path): (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


def publish_only(save: Path) -> int:
    from run import main

    return main(["--publish-only", str(save)])


def overwrite_run(settings, model) -> dict:
    from run import execute, prepare_directory

    prepare_directory(settings, overwrite=True)
    return asyncio.run(execute(settings, models={"evol": model, "optim": model}, quiet=True))


def test_no_command_sequence_touches_a_file_the_run_did_not_create(tmp_path, capsys):
    save = tmp_path / "out"
    save.mkdir()
    data = save / "my_input.jsonl"  # the user keeps their input inside the save path
    data.write_bytes((REPO / "data" / "sample_seed.jsonl").read_bytes())
    planted = [data, save / "notes.txt", save / "report.html.orig", save / "sub" / "keep.bin"]
    planted[3].parent.mkdir()
    for path in planted[1:]:
        path.write_bytes(b"the user's own bytes \x00\xff\n")
    before = fingerprints(planted)
    fields = dict(data_path=str(data), max_steps=1, loop=2, batch_size=2)
    settings = make_settings(tmp_path, **fields)

    def unchanged(step: str) -> None:
        assert fingerprints(planted) == before, step

    with pytest.raises(FatalLLMError):
        run_workflow(settings, ScriptedChatModel(responder=CrashAfter(30)))
    unchanged("a crashed run")
    run_workflow(settings, ScriptedChatModel())
    unchanged("its resume")
    with pytest.raises(ConfigError):
        run_workflow(make_settings(tmp_path, **{**fields, "loop": 3}), ScriptedChatModel())
    unchanged("a run refused for other settings")
    assert publish_only(save) == 0
    unchanged("--publish-only")
    with pytest.raises(ConfigError):
        overwrite_run(make_settings(tmp_path, **{**fields, "data_path": str(save / "records.jsonl")}),
                      ScriptedChatModel())
    unchanged("--overwrite reading its own records")

    mine = save / "dataset" / "mine.md"  # the user adds a file to the dataset folder
    mine.write_text("my notes on this dataset\n")
    planted.append(mine)
    before = fingerprints(planted)
    assert publish_only(save) == 1
    unchanged("a refused rebuild")
    with pytest.raises(ConfigError, match="mine.md was not written by autoevol"):
        overwrite_run(make_settings(tmp_path, **{**fields, "loop": 1}), ScriptedChatModel())
    unchanged("a refused --overwrite")

    mine.unlink()  # the user moves their file away: now the tool may rebuild and start afresh
    planted.remove(mine)
    before = fingerprints(planted)
    overwrite_run(make_settings(tmp_path, **{**fields, "loop": 1}), ScriptedChatModel())
    unchanged("--overwrite")
    assert publish_only(save) == 0
    unchanged("a rebuild")
    listed = json.loads((save / ".autoevol-manifest.json").read_text())["paths"]
    assert not {str(path.relative_to(save)) for path in planted} & set(listed)
    capsys.readouterr()


def failing_some(prompt: str, seed: int | None) -> str:
    """The default world, except that an instruction about a number is copied back unchanged (a failure)."""
    if task_of(prompt) == "evolve" and any(ch.isdigit() for ch in instruction_of(prompt)):
        return f"#Finally Rewritten Instruction#\n{instruction_of(prompt)}"
    return default_responder(prompt, seed)


GOOD = [f"Explain how {topic} works, for a curious teenager." for topic in
        ("a bicycle gear", "a rainbow", "yeast in bread", "a heat pump", "a lock and key", "tides")]
INPUTS = {
    "good.jsonl": [{"id": f"g{i}", "instruction": text} for i, text in enumerate(GOOD)],
    "empty_and_blank.jsonl": [{"id": "e0", "instruction": ""}, {"id": "e1", "instruction": "   "},
                              {"id": "e2", "instruction": None}, {"id": "e3", "instruction": GOOD[0]},
                              {"id": "e4", "instruction": "Name 3 rivers in Korea."}],
    "non_string.jsonl": [{"id": "n0", "instruction": ["a", "list"]}, {"id": "n1", "instruction": ["b"]},
                         {"id": "n2", "instruction": None}],
    "duplicates.jsonl": [{"id": "d0", "instruction": GOOD[1]}, {"id": "d1", "instruction": GOOD[1]},
                         {"id": "d1", "instruction": GOOD[2]}, {"id": "d2", "instruction": GOOD[1] + " "},
                         {"id": "d3", "instruction": "Count to 10 in Korean."}],
    "no_ids.jsonl": [{"instruction": text} for text in GOOD[:3]] + [{"instruction": ""}],
    "all_refused.jsonl": [{"id": "r0", "instruction": ""}, {"id": "r1", "instruction": " "}],
    "empty_file.jsonl": [],
}


def accounted_ids(save: Path, loop: int) -> tuple[list[str], dict[int, set[str]]]:
    """Input ids in seeds.jsonl or refused at input, and per level the root ids its records and failures carry."""
    def lines(name: str) -> list[dict]:
        path = save / name
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []

    failures, records, seeds = lines("failures.jsonl"), lines("records.jsonl"), lines("seeds.jsonl")
    level_0 = [row["id"] for row in seeds] + [f["id"] for f in failures if f["level"] == 0]
    roots = {level: {item["root_id"] for item in records + failures if item["level"] == level and
                     not item.get("added_by")} for level in range(1, loop + 1)}
    return level_0, roots


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_input_row_is_accounted_for(tmp_path, name):
    rows = INPUTS[name]
    data = tmp_path / name
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = make_settings(tmp_path, data_path=str(data), max_steps=0, loop=2, diversity=["dedup"])
    try:
        run_workflow(settings, ScriptedChatModel(responder=failing_some))
    except ConfigError as refusal:  # the whole input refused, in one line, before any work
        assert "\n" not in str(refusal) and str(refusal)
        return
    level_0, roots = accounted_ids(Path(settings.save_path), loop=2)
    assert len(level_0) == len(rows), name  # each row once: a seed or an input refusal
    given = [str(row["id"]) if "id" in row else str(index) for index, row in enumerate(rows)]
    # A duplicate id may be renamed to stay unique, but stays recognisable by its prefix.
    assert sorted(row_id.split("#")[0] for row_id in level_0) == sorted(given)
    seeds = {json.loads(line)["id"] for line in (Path(settings.save_path) / "seeds.jsonl").read_text().splitlines()}
    survivors = seeds
    for level in (1, 2):  # every seed, and every survivor of a level, reaches the next level's files
        assert survivors <= roots[level], (name, level)
        records = [json.loads(line) for line in (Path(settings.save_path) / "records.jsonl").read_text().splitlines()]
        survivors = {r["root_id"] for r in records if r["level"] == level and not r.get("added_by")}
