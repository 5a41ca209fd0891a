"""Issue 14: the diversity-step contract and near-duplicate seeds refused at load."""

from __future__ import annotations

import json

import pytest

from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel
from nodes.diversity import new_item, sort_out
from record_store.loading import read_seed_set
from user_errors import ConfigError

ROWS = ["Describe the water cycle for a ten-year-old, with one everyday example.",
        "서울에서 부산까지 기차로 가장 빨리 가는 방법은 무엇인가요?",
        "Name three rivers in Africa and say which countries they cross."]


def _data(tmp_path, instructions):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "instruction": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(instructions)), encoding="utf-8")
    return str(path)


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _step_file(tmp_path, body):
    plugin = tmp_path / "my_step.py"
    plugin.write_text("from nodes.diversity import new_item\n\n" + body, encoding="utf-8")
    return f"{plugin}:step"


def test_a_step_that_adds_with_new_item_is_accounted_for(tmp_path):
    step = _step_file(tmp_path, "async def step(chunk, context):\n"
                                "    return chunk + [new_item(chunk[0], chunk[0]['instruction'] + ' Add a table.')]\n")
    settings = make_settings(tmp_path, data_path=_data(tmp_path, ROWS), max_steps=0, loop=2, diversity=[step])
    run_workflow(settings, ScriptedChatModel())
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["levels"]["1"]["added"] == 1 and run["counts"]["accounting_holds"]
    added = [r for r in _read(tmp_path / "out" / "records.jsonl") if r["id"] == "d0.L1.step1"]
    assert added and added[0]["parent_id"] == "d0.L1" and added[0]["root_id"] == "d0.L1.step1"


@pytest.mark.parametrize("returned,needle", [
    ("None", "must return a list of items"),
    ("[item['instruction'] for item in chunk]", "must return a list of items"),
    ("chunk + [{'id': 'x'}]", "created item 'x' without an instruction"),
])
def test_a_malformed_return_ends_the_run_naming_the_step(tmp_path, returned, needle):
    step = _step_file(tmp_path, f"async def step(chunk, context):\n    return {returned}\n")
    settings = make_settings(tmp_path, data_path=_data(tmp_path, ROWS), max_steps=0, loop=1, diversity=[step])
    with pytest.raises(ConfigError) as error:
        run_workflow(settings, ScriptedChatModel())
    message = str(error.value)
    assert f"diversity step '{step}'" in message and needle in message and "\n" not in message


def test_a_step_that_raises_ends_the_run_in_one_line_and_the_run_resumes(tmp_path):
    step = _step_file(tmp_path, "async def step(chunk, context):\n    raise KeyError('category')\n")
    settings = make_settings(tmp_path, data_path=_data(tmp_path, ROWS), max_steps=0, loop=1, diversity=[step])
    model = ScriptedChatModel()
    with pytest.raises(ConfigError, match=r"my_step.py:step' failed: KeyError: 'category'"):
        run_workflow(settings, model)
    evolutions = model.tasks().count("evolve")
    _step_file(tmp_path, "async def step(chunk, context):\n    return chunk\n")  # the user fixes the step
    values = run_workflow(settings, model)
    assert values["level"] == 1 and len(_read(tmp_path / "out" / "records.jsonl")) == 3
    assert model.tasks().count("evolve") == evolutions  # the chunk's evolutions came back from the checkpoint/cache


def test_new_item_makes_a_new_lineage_that_sort_out_keeps_beside_its_parent():
    parent = {"id": "d0.L1", "root_id": "d0", "parent_id": "d0", "level": 1, "instruction": "Explain tides."}
    created = new_item(parent, "Explain tides on a moon of Saturn.")
    assert sort_out("mine", 1, [parent], [parent, created]) == [[parent, created]]
    assert (created["id"], created["root_id"], created["parent_id"], created["level"]) == (
        "d0.L1.mine1", "d0.L1.mine1", "d0.L1", 1)


@pytest.mark.parametrize("original,copy", [
    ("서울에서 부산까지 기차로 가장 빨리 가는 방법은 무엇인가요?", "서울에서 부산까지 기차로 가장 빨리 가는 방법은 무엇인가요？"),
    ("Describe the water cycle for a ten-year-old, with one everyday example.",
     "Describe the water cycle for a ten-year-old, with one everyday example!"),
])
def test_near_duplicate_seeds_are_refused_at_load_naming_the_first(tmp_path, original, copy):
    rows = ["Name three rivers in Africa and say which countries they cross.", original, copy]
    settings = make_settings(tmp_path, data_path=_data(tmp_path, rows), diversity=["dedup"])
    seeds = read_seed_set(settings)
    assert [row["id"] for row in seeds.rows] == ["d0", "d1"]
    assert [(r["id"], r["level"], r["reason"], r["detail"]) for r in seeds.refused] == [
        ("d2", 0, "near_duplicate", "duplicates d1")]
    kept = read_seed_set(make_settings(tmp_path, data_path=_data(tmp_path, rows), diversity=["none"]))
    assert len(kept.rows) == 3 and not kept.refused


def test_two_created_items_get_two_ids_by_construction():
    parent = {"id": "d0.L1", "root_id": "d0", "parent_id": "d0", "level": 1, "instruction": "Explain tides."}
    twins = [new_item(parent, "Explain tides on Titan."), new_item(parent, "Explain tides on Europa.")]
    [[_, *created]] = sort_out("my_steps.py:mine", 1, [parent], [parent, *twins])
    assert [item["id"] for item in created] == ["d0.L1.mine1", "d0.L1.mine2"]


def test_an_input_returned_twice_is_refused_naming_the_step():
    parent = {"id": "d0.L1", "root_id": "d0", "parent_id": "d0", "level": 1, "instruction": "Explain tides."}
    with pytest.raises(ConfigError, match="'mine' returned the item 'd0.L1' twice"):
        sort_out("mine", 1, [parent], [parent, dict(parent)])


def test_a_created_item_starts_its_own_lineage_even_when_copied_from_its_parent():
    parent = {"id": "d0.L1", "root_id": "d0", "parent_id": "d0", "level": 1, "instruction": "Explain tides."}
    copied = {**parent, "id": "d0.L1.copy", "parent_id": "d0.L1", "instruction": "Explain tides twice."}
    [[own, created]] = sort_out("mine", 1, [parent], [parent, copied])
    assert own is parent and created["root_id"] == created["id"] == "d0.L1.mine1" and created["added_by"] == "mine"
