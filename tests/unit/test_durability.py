"""Issue 18: what the store is told to write is on disk, exactly once, or the write raises."""

from __future__ import annotations

import json
import os

import pytest

from record_store.store import RecordStore


def synced_paths(monkeypatch) -> list[str]:
    """Record the file each os.fsync flushes (by its descriptor's path), and still flush it."""
    synced, real_fsync = [], os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_seeds_and_load_refusals_are_flushed_to_disk_and_seeds_replaced_whole(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    store.seeds_path.write_text('{"old": true}\n', encoding="utf-8")
    synced = synced_paths(monkeypatch)
    seeds = [{"id": "a", "root_id": "a", "level": 0, "instruction": "one", "original": "one"}]
    refused = [{"id": "b", "root_id": "b", "level": 0, "stage": "input", "reason": "empty", "detail": ""}]
    store.write_input(seeds, refused)
    # The seeds were flushed under a temporary name, then renamed over the old file (never truncated in place).
    assert any(path.endswith(".seeds.jsonl.tmp") for path in synced), synced
    assert str(tmp_path / "failures.jsonl") in synced
    assert str(tmp_path) in synced  # the directory: the rename is durable too
    assert [json.loads(line) for line in store.seeds_path.read_text().splitlines()] == seeds
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_load_done_again_after_a_kill_writes_each_refusal_once(tmp_path):
    refused = [{"id": "b", "root_id": "b", "level": 0, "stage": "input", "reason": "empty", "detail": ""}]
    RecordStore(tmp_path).write_input([], refused)
    RecordStore(tmp_path).write_input([], refused)  # the next invocation repeats load_data
    assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 1


def test_a_second_write_of_one_id_and_level_raises_and_writes_nothing(tmp_path):
    from record_store.store import DuplicateWrite

    store = RecordStore(tmp_path)
    item = {"id": "a.L1", "root_id": "a", "level": 1}
    with pytest.raises(DuplicateWrite, match=r"'a.L1', level 1"):
        store.add_records([item, {**item, "instruction": "other"}])  # twice within one call
    assert store.records_path.read_text() == ""
    store.add_records([item])
    with pytest.raises(DuplicateWrite):
        store.add_failures([{**item, "stage": "respond"}])  # across calls and files
    assert RecordStore(tmp_path).written_earlier("a.L1", 1) and not store.failures_path.read_text()


def test_items_two_steps_create_from_one_parent_all_get_their_own_ids(tmp_path):
    """breadth and a user step both create from d0.L1: once both were 'd0.L1.B', and the store dropped one."""
    from conftest import make_settings, run_workflow
    from fakes import ScriptedChatModel

    rows = ["Describe the water cycle for a ten-year-old, with one everyday example.",
            "Name three rivers in Africa and say which countries they cross."]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "instruction": t}) + "\n" for i, t in enumerate(rows)))
    plugin = tmp_path / "more.py"
    plugin.write_text("from nodes.diversity import new_item\n\n"
                      "async def step(items, context):\n"
                      "    return items + [new_item(i, i['instruction'] + ' Use a table.') for i in items]\n")
    settings = make_settings(tmp_path, data_path=str(data), max_steps=0, loop=1, breadth_ratio=1.0,
                             diversity=["breadth", f"{plugin}:step"])
    run_workflow(settings, ScriptedChatModel())
    out = tmp_path / "out"
    written = [json.loads(line) for name in ("records.jsonl", "failures.jsonl")
               for line in (out / name).read_text().splitlines()]
    level_1 = {item["id"]: item for item in written if item["level"] == 1}
    for seed in ("d0", "d1"):
        own = f"{seed}.L1"
        assert {own, f"{own}.breadth1", f"{own}.step1", f"{own}.breadth1.step1"} <= set(level_1), sorted(level_1)
        assert level_1[f"{own}.step1"]["parent_id"] == own
        assert level_1[f"{own}.breadth1.step1"]["parent_id"] == f"{own}.breadth1"
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["levels"]["1"]["added"] == 6 and run["counts"]["accounting_holds"]


def test_usage_is_on_disk_as_it_accrues_not_only_when_the_invocation_ends(tmp_path):
    """What a kill -9 leaves: the requests sent and the tokens answered, whether usage.json was written or not."""
    import asyncio

    from conftest import make_settings
    from fakes import ScriptedChatModel
    from resources import RunResources, prior_usage

    settings = make_settings(tmp_path)

    async def ask(resources, n):
        for i in range(n):
            await resources.llms.evol.complete(f"question {i} of {n}", role="respond")

    first = RunResources.build(settings, models={"evol": ScriptedChatModel(), "optim": ScriptedChatModel()})
    asyncio.run(ask(first, 3))  # ... and the process is killed: no save_usage
    after_kill = prior_usage(tmp_path / "out")["token_usage"]["respond"]
    assert after_kill["requests"] == 3 and after_kill["output_tokens"] == first.llms.evol.usage["respond"].output_tokens > 0
    second = RunResources.build(settings, models={"evol": ScriptedChatModel(), "optim": ScriptedChatModel()},
                                max_budget_tokens=10**9)
    assert second.llms.evol.budget.used == after_kill["input_tokens"] + after_kill["output_tokens"]
    asyncio.run(ask(second, 2))
    second.save_usage()
    asyncio.run(ask(second, 1))  # after the snapshot, before the next one
    assert prior_usage(tmp_path / "out")["token_usage"]["respond"]["requests"] == 6


def test_the_index_a_resume_rebuilds_is_the_one_the_live_run_had(tmp_path):
    """Only what passed dedup joins the index: not the breadth items made after it, but an item that passed
    dedup and was then removed by a later step does (once, every record was put in the rebuilt index)."""
    from conftest import make_settings, run_workflow
    from fakes import ScriptedChatModel
    from record_store.near_duplicates import NearDuplicateIndex

    rows = ["Describe the water cycle for a ten-year-old, with one everyday example.",
            "Name three rivers in Africa and say which countries they cross.",
            "Plan a three-day hiking trip in the Alps for a family with small children."]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "instruction": t}) + "\n" for i, t in enumerate(rows)))
    plugin = tmp_path / "drop.py"
    plugin.write_text("async def step(items, context):\n    return [i for i in items if i['root_id'] != 'd1']\n")
    settings = make_settings(tmp_path, data_path=str(data), max_steps=0, loop=2, breadth_ratio=1.0,
                             diversity=["dedup", "breadth", f"{plugin}:step"])
    run_workflow(settings, ScriptedChatModel())
    out = tmp_path / "out"
    live = json.loads((out / "dedup_index.json").read_text())
    rebuilt = NearDuplicateIndex.from_store(RecordStore(out), settings.dedup_threshold)
    assert live == {"level": 2, **rebuilt.membership()}
    members = {item_id for (item_id,) in rebuilt._db.execute("SELECT item_id FROM items")}
    assert "d1.L1" in members  # passed dedup, then removed by the step: it was in the live index
    assert {"d0.L1.breadth1", "d2.L1.breadth1"}.isdisjoint(members)
    assert {"d0.L1.breadth1.L2", "d0", "d0.L1", "d0.L2"} <= members


def test_a_level_starts_where_the_one_before_ended_whenever_its_start_is_run(tmp_path):
    """LangGraph saves a node's checkpoint while the next node runs: a kill can lose start_level's result
    after stream_level wrote records. The rerun must not start the level after them (they would belong
    to no level, and the next level would never take them as parents)."""
    import asyncio

    from conftest import make_settings
    from fakes import ScriptedChatModel
    from nodes.generator import start_level
    from resources import RunResources
    from state import GenerationState

    resources = RunResources.build(make_settings(tmp_path), models={"evol": ScriptedChatModel(), "optim": ScriptedChatModel()})
    resources.store.add_records([{"id": "a.L1", "root_id": "a", "level": 1, "instruction": "x"}])
    config = {"configurable": {"resources": resources}}
    first = asyncio.run(start_level(GenerationState(level=0, level_spans={"0": [0, 10]}), config))
    assert first["level_spans"]["1"] == [0, -1]
    size = resources.store.size(resources.store.records_path)
    resources.store.add_records([{"id": "a.L2", "root_id": "a", "level": 2, "instruction": "y"}])
    second = asyncio.run(start_level(GenerationState(level=1, level_spans={"0": [0, 10], "1": [0, size]}), config))
    assert second["level_spans"]["2"] == [size, -1]
