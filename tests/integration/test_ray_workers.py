"""--workers on a local Ray: the same records as one process, near-duplicates caught across shards, resume.

One Ray with 2 CPUs serves the session (tests/conftest.py); the endpoint is a loopback HTTP
server in the test's event loop, so the workers, separate processes, call it like any endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from chat_server import ChatServer, shaped_answer
from conftest import TEST_DATA, fake_llm_config, make_settings
from ray_backend.shards import shard_of

pytestmark = pytest.mark.integration

SEEDS = ["Explain why tide pools hold so many species in so little space.",
         "Give a feeding schedule for a new sourdough starter kept in a cold kitchen.",
         "What makes a glacier calve, and when in the year does it happen most?",
         "Compare hub gears with derailleurs for a commuter who rides in the rain.",
         "How do honeybees keep their cluster warm through a northern winter?",
         "Draft safety advice for families watching a partial solar eclipse.",
         "Teach me to fold an origami crane; number the folds.",
         "Why is soil on the slopes of old volcanoes so fertile?",
         "Suggest three exercises for a pianist learning to improvise over blues changes.",
         "Describe how a Fresnel lens concentrates a lighthouse beam.",
         "Summarise what coral bleaching is, in plain words, for a dive-shop leaflet.",
         "List the tools a medieval bookbinder needed to sew a codex.",
         "Why does a kite with a longer tail fly more steadily?",
         "Write tasting notes for a kombucha brewed with hibiscus."]
TWINS = [("Write a limerick about a stubborn goat on a mountain farm.", "List three uses of copper wire in old radios."),
         ("Name four constellations visible from Lisbon in August.", "Convert 3 cups of flour to grams and show the steps."),
         ("Draft a polite note asking a neighbour to trim a hedge.", "Which chess opening suits a player who likes quiet positions?")]
EVOLVED_TWINS = ["explain, step by step, how a harbour pilot brings a container ship through fog into a narrow port.",
                 "design a week of vegetarian school lunches under a fixed budget, with a shopping list per day.",
                 "argue for and against daylight saving time in a short debate between two farmers."]
PAIRS = len(TWINS)


WORDS = ("amber basalt cedar dune ember fjord garnet harbor iris jasper kelp lagoon marble nectar obsidian prairie "
         "quartz reef sierra tundra umber valley willow xenon yarrow zephyr anvil bellows chisel dowel easel forge "
         "gimlet hinge ingot joist kiln lathe mallet notch").split()


def twin_answer(prompt: str, seed: int | None = None) -> str:
    """shaped_answer, except that both seeds of a planted pair evolve into the very same instruction,
    and an in-breadth instruction is a new one of its own (shaped_answer would give them all one text)."""
    if "#Instruction#\n" in prompt and "(twin " in prompt:
        pair = prompt.rsplit("(twin ", 1)[1].split(")", 1)[0]
        return f"#Finally Rewritten Instruction#\nIn detail, {EVOLVED_TWINS[int(pair)]}"
    if "#Given Instruction#\n" in prompt:
        words = random.Random(prompt.rsplit("#Given Instruction#\n", 1)[1]).sample(WORDS, 6)
        return f"#Final Instruction#\nWrite a short field guide entry linking {', '.join(words)}."
    return shaped_answer(prompt, seed)


def seed_rows() -> list[dict]:
    """Tens of distinct seeds, and pairs of unlike seeds whose roots fall in different shards of two workers."""
    rows = [json.loads(line) for line in (TEST_DATA / "alpaca_tasks.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [{"id": row["id"], "instruction": row["instruction"]} for row in rows]
    rows += [{"id": f"topic_{n}", "instruction": text} for n, text in enumerate(SEEDS)]
    shards: dict[int, list[str]] = {0: [], 1: []}
    for n in range(40):
        shards[shard_of(f"twin_{n}", 2)].append(f"twin_{n}")
    for pair, (first_text, second_text) in enumerate(TWINS):
        rows.append({"id": shards[0][pair], "instruction": f"{first_text} (twin {pair})"})
        rows.append({"id": shards[1][pair], "instruction": f"{second_text} (twin {pair})"})
    return rows


def settings_for(tmp_path: Path, url: str, name: str, **fields):
    data = tmp_path / "seeds.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in seed_rows()), encoding="utf-8")
    llm = fake_llm_config("evol", base_url=url, concurrency=8, timeout=10.0)
    fields = {"diversity": ["dedup", "breadth"], "breadth_ratio": 0.3, **fields}
    return make_settings(tmp_path / name, data_path=str(data), evol_llm=llm, optim_llm=llm, max_steps=0, loop=2,
                         **fields)


def run(settings, **options) -> dict:
    from run import execute, prepare_directory

    prepare_directory(settings, overwrite=False)
    return asyncio.run(execute(settings, quiet=True, **options))


async def served(answer, scenario):
    async with ChatServer(latency=0.005, answer=answer) as server:
        result = await scenario(server)
        return result, server.served


def lines(directory: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (directory / "out" / name).read_text(encoding="utf-8").splitlines()]


def by_key(directory: Path, name: str) -> dict[tuple[str, int], dict]:
    written = lines(directory, name)
    keys = [(item["id"], item["level"]) for item in written]
    assert len(keys) == len(set(keys)), f"{name}: an (id, level) written twice"
    return dict(zip(keys, written))


def planted(key: tuple[str, int]) -> bool:
    return key[0].startswith("twin_")


def assert_same_accounting(ours: Path, theirs: Path) -> None:
    """The same (id, level) rows, records with the same texts; a planted pair's lineages compared by count.

    Which member of a planted pair reaches the index first is a race, in one process too, and breadth
    picks by id, so the breadth items of the surviving member may differ."""
    accounted, records = {}, {}
    for name, directory in (("ours", ours), ("theirs", theirs)):
        records[name] = by_key(directory, "records.jsonl")
        accounted[name] = set(records[name]) | set(by_key(directory, "failures.jsonl"))
    assert {k for k in accounted["ours"] if not planted(k)} == {k for k in accounted["theirs"] if not planted(k)}
    lineages = {name: sorted(k[1] for k in keys if planted(k) and ".breadth" not in k[0]) for name, keys in accounted.items()}
    assert lineages["ours"] == lineages["theirs"]
    plain = {key for key in records["ours"] if not planted(key)}
    assert plain == {key for key in records["theirs"] if not planted(key)} and len(plain) > 40
    fields = ("instruction", "response", "parent_id", "root_id", "method_id")
    for key in plain:
        assert {f: records["ours"][key][f] for f in fields} == {f: records["theirs"][key][f] for f in fields}, key


def unplanted_counts(directory: Path) -> dict[int, tuple[int, int]]:
    """Per level, the records and failures outside the planted pairs' lineages."""
    counts: dict[int, list[int]] = {}
    for column, name in enumerate(("records.jsonl", "failures.jsonl")):
        for key in by_key(directory, name):
            if not planted(key):
                counts.setdefault(key[1], [0, 0])[column] += 1
    return {level: tuple(pair) for level, pair in sorted(counts.items())}


def test_two_workers_write_what_one_process_writes_and_catch_near_duplicates_across_shards(tmp_path, ray_cluster):
    async def both(server):
        from run import execute, prepare_directory

        outcomes = {}
        for name, workers in (("one", 1), ("two", 2)):
            settings = settings_for(tmp_path, server.base_url, name)
            prepare_directory(settings, overwrite=False)
            outcomes[name] = await execute(settings, quiet=True, workers=workers)
        return outcomes

    outcomes, requests = asyncio.run(served(twin_answer, both))
    one, two = tmp_path / "one", tmp_path / "two"
    records = {name: by_key(d, "records.jsonl") for name, d in (("one", one), ("two", two))}
    failures = {name: by_key(d, "failures.jsonl") for name, d in (("one", one), ("two", two))}
    print(f"\n[ray] {requests} requests; records {len(records['two'])}, failures {len(failures['two'])}; "
          f"counts {outcomes['two']['level_counts']}")

    assert_same_accounting(two, one)
    assert any(record.get("added_by") == "breadth" for record in records["two"].values())
    # Level counts include the planted lineages, whose surviving twin (and so its breadth items) is a race:
    # compared outside them, and the planted ones by how many lineages reach each level.
    assert unplanted_counts(one) == unplanted_counts(two)
    for name in ("one", "two"):
        counts = outcomes[name]["level_counts"]
        assert all(c["parents"] + c.get("added", 0) == c["records"] + c["failures"] + c.get("skipped", 0)
                   for c in counts.values()), counts

    # Each planted pair, its members in different shards, loses exactly one member at level 1.
    for name in ("one", "two"):
        duplicates = [key for key, failure in failures[name].items() if failure["reason"] == "near_duplicate"]
        assert sorted(key[1] for key in duplicates) == [1] * PAIRS and all(planted(key) for key in duplicates), name
        kept = [key for key in records[name] if planted(key) and key[1] == 1]
        assert len(kept) == PAIRS
        assert len({shard_of(key[0], 2) for key in duplicates + kept}) == 2

    # The workers' usage reaches run.json, and their shard files were merged whole.
    run_json = json.loads((two / "out" / "run.json").read_text(encoding="utf-8"))
    assert {e.get("worker") for e in run_json["endpoints"]} >= {"w0", "w1"}
    assert sum(e["requests"] for e in run_json["endpoints"] if e.get("worker")) > 0
    shard_lines = sum(len((two / "out" / "shards" / w / f).read_text().splitlines())
                      for w in ("w0", "w1") for f in ("records.jsonl", "failures.jsonl"))
    assert shard_lines == len(records["two"]) + len([k for k in failures["two"] if k[1] > 0])


def unmerged_level_2(out: Path) -> int:
    """Rows of level 2 that a worker wrote to its shard and the driver has not merged yet."""
    if not (out / "failures.jsonl").exists():
        return 0
    merged = set(by_key(out.parent, "records.jsonl")) | set(by_key(out.parent, "failures.jsonl"))
    in_shards = [json.loads(line) for path in (out / "shards").rglob("*.jsonl")
                 for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]
    return len([item for item in in_shards if item["level"] == 2 and (item["id"], item["level"]) not in merged])


def test_a_driver_killed_mid_level_resumes_with_nothing_lost_or_written_twice(tmp_path, ray_cluster):
    async def killed_then_resumed(server):
        from run import execute, prepare_directory

        reference = settings_for(tmp_path, server.base_url, "ref")
        prepare_directory(reference, overwrite=False)
        await execute(reference, quiet=True, workers=1)
        settings = settings_for(tmp_path, server.base_url, "cut")
        prepare_directory(settings, overwrite=False)
        server.latency = 0.1  # a slow level 2, so that the driver is stopped inside it
        out = tmp_path / "cut" / "out"
        running = asyncio.ensure_future(execute(settings, quiet=True, workers=2))
        while not running.done() and unmerged_level_2(out) < 5:
            await asyncio.sleep(0.01)
        running.cancel()  # the driver goes as a killed one does: its workers die with it, mid-level
        with pytest.raises(asyncio.CancelledError):
            await running
        left_in_shards = unmerged_level_2(out)
        server.latency, before = 0.005, server.served
        await execute(settings, quiet=True, workers=2)
        return left_in_shards, server.served - before

    (left_in_shards, resumed_requests), _ = asyncio.run(served(twin_answer, killed_then_resumed))
    print(f"\n[ray resume] {left_in_shards} rows of level 2 waited in shard files; "
          f"the resumed run sent {resumed_requests} requests")
    assert left_in_shards >= 5
    assert_same_accounting(tmp_path / "cut", tmp_path / "ref")


KEEP_OUT_STEP = '''
from nodes.diversity import eliminate_item


async def keep_out(items, context):
    """At level 2, every parent's own child fails and the breadth items made beside it are kept."""
    for item in items:
        if context.level == 2 and not item.get("added_by"):
            eliminate_item(item, "kept_out", "only created items pass level 2")
    return items
'''


def merge_failures_only(out: Path) -> int:
    """What a driver killed inside the shard merge leaves: each shard's failures merged, its records not."""
    from record_store.store import RecordStore

    store, merged = RecordStore(out), 0
    for directory in sorted((out / "shards").glob("w*")):
        path = directory / "failures.jsonl"
        lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]
        path.write_text("".join(lines), encoding="utf-8")
        fresh = [item for item in map(json.loads, lines) if not store.is_written(item["id"], item["level"])]
        store.add_failures(fresh)
        merged += len(fresh)
        (directory / "merged.json").write_text(json.dumps({"failures.jsonl": path.stat().st_size}))
    return merged


def test_a_driver_killed_inside_the_merge_resumes_with_one_worker_and_loses_nothing(tmp_path, ray_cluster):
    step = tmp_path / "keep_out.py"
    step.write_text(KEEP_OUT_STEP, encoding="utf-8")
    diversity = ["dedup", "breadth", f"{step}:keep_out"]  # with breadth_ratio 1: a breadth item beside each failure

    async def killed_then_resumed(server):
        from run import execute, prepare_directory

        reference = settings_for(tmp_path, server.base_url, "ref", diversity=diversity, breadth_ratio=1.0)
        prepare_directory(reference, overwrite=False)
        await execute(reference, quiet=True, workers=1)
        settings = settings_for(tmp_path, server.base_url, "cut", diversity=diversity, breadth_ratio=1.0)
        prepare_directory(settings, overwrite=False)
        server.latency = 0.1
        out = tmp_path / "cut" / "out"
        running = asyncio.ensure_future(execute(settings, quiet=True, workers=2))
        while not running.done() and unmerged_level_2(out) < 8:
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        merged = merge_failures_only(out)
        server.latency = 0.005
        await execute(settings, quiet=True, workers=1)  # resumed in one process: the shards must be finished
        return merged

    merged, _ = asyncio.run(served(twin_answer, killed_then_resumed))
    out = tmp_path / "cut" / "out"
    in_shards = {(item["id"], item["level"]) for path in (out / "shards").rglob("*.jsonl")
                 for item in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    written = set(by_key(tmp_path / "cut", "records.jsonl")) | set(by_key(tmp_path / "cut", "failures.jsonl"))
    print(f"\n[ray merge cut] {merged} failures merged before the kill; {len(in_shards)} lines in shards")
    assert merged >= 3
    assert in_shards <= written, sorted(in_shards - written)[:5]
    assert_same_accounting(tmp_path / "cut", tmp_path / "ref")
