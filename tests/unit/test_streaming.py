"""Streaming inside a level: no item waits for another, a killed level resumes exactly, user steps get micro-batches."""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import openai
import pytest

from conftest import fake_llm_config, make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder, instruction_of, task_of
from llm_access.client import FatalLLMError
from user_errors import ConfigError

SLOW_TEXT = "Describe the slowest river crossing you can imagine."


WORDS = ("river harbor lantern orchard glacier violin pepper compass meadow canyon falcon ledger quartz tundra "
         "saddle furnace pelican marble archive biscuit cobalt dune ember fjord gondola hazel igloo jasmine kettle "
         "lagoon mosaic nectar oyster prism quiver raven sapphire tulip").split()


def _data(tmp_path, count: int, first: str | None = None) -> str:
    rng = random.Random(3)  # distinct texts, so near-duplicate removal leaves them alone
    texts = ([first] if first else []) + [f"Explain how {' '.join(rng.sample(WORDS, 6))} relate, with one example."
                                          for _ in range(count - (1 if first else 0))]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i:02d}", "instruction": t}) + "\n" for i, t in enumerate(texts)))
    return str(path)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_slow_answer_holds_one_slot_and_no_other_item_waits_for_it(tmp_path):
    released = threading.Event()
    answered_before_release = []

    def responder(prompt, seed):
        if task_of(prompt) == "evolve" and instruction_of(prompt) == SLOW_TEXT:
            released.wait(timeout=20)  # one request hangs until every other item is done
        elif task_of(prompt) == "respond" and not released.is_set():
            answered_before_release.append(prompt)
            if len(answered_before_release) == 29:
                released.set()
        return default_responder(prompt, seed)

    settings = make_settings(tmp_path, data_path=_data(tmp_path, 30, first=SLOW_TEXT), max_steps=0, loop=1,
                             diversity=["none"], evol_llm=fake_llm_config("evol", concurrency=4))
    run_workflow(settings, ScriptedChatModel(responder=responder))
    records = _lines(tmp_path / "out" / "records.jsonl")
    # With chunk barriers the 11 items sharing the slow item's chunk could not be answered
    # before it; streaming answers all 29 others while it hangs, and writes it last.
    assert len(answered_before_release) == 29
    assert [r["root_id"] for r in records][-1] == "r00" and len(records) == 30


class CrashAt:
    """The default world, but call `limit` fails with a 401, which ends the run (as a kill would)."""

    def __init__(self, limit: int):
        self.limit, self.count, self.lock = limit, 0, threading.Lock()

    def __call__(self, prompt, seed):
        with self.lock:
            self.count += 1
            crash = self.count == self.limit
        if crash:
            request = httpx.Request("POST", "http://fake/v1/chat/completions")
            raise openai.AuthenticationError("key revoked", response=httpx.Response(401, request=request), body=None)
        return default_responder(prompt, seed)


@pytest.mark.parametrize("crash_share", [0.4, 0.8])
def test_a_level_killed_midway_resumes_with_nothing_lost_or_written_twice(tmp_path, crash_share):
    fields = dict(max_steps=0, loop=2, data_path=_data(tmp_path, 60), diversity=["dedup", "breadth"], breadth_ratio=0.3)
    reference_model = ScriptedChatModel()
    run_workflow(make_settings(tmp_path / "ref", **fields), reference_model)

    settings = make_settings(tmp_path / "crash", **fields)
    crashing = ScriptedChatModel(responder=CrashAt(int(crash_share * len(reference_model.calls))))
    with pytest.raises(FatalLLMError):
        run_workflow(settings, crashing)
    partial = _lines(tmp_path / "crash" / "out" / "records.jsonl")
    assert 0 < len(partial) < len(_lines(tmp_path / "ref" / "out" / "records.jsonl"))  # it died mid-level
    resumed = ScriptedChatModel()
    values = run_workflow(settings, resumed)

    for name in ("records.jsonl", "failures.jsonl"):
        ours = _lines(tmp_path / "crash" / "out" / name)
        theirs = _lines(tmp_path / "ref" / "out" / name)
        assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs)), name
        assert len({(i["id"], i["level"]) for i in ours}) == len(ours)
    assert values["level_counts"] == json.loads((tmp_path / "ref" / "out" / "run.json").read_text())["counts"]["levels"]
    # Requests of both invocations together: at most 1.2x an uninterrupted run's.
    assert len(crashing.calls) + len(resumed.calls) <= 1.2 * len(reference_model.calls)
    again = ScriptedChatModel()
    run_workflow(settings, again)
    assert again.calls == []


BATCH_STEP = '''
from pathlib import Path

from nodes.diversity import eliminate_item


async def shape(items, context):
    with open(Path(__file__).with_suffix(".batches"), "a") as log:
        log.write(f"{len(items)}\\n")
    kept = []
    for item in items:
        number = int(item["root_id"][1:])
        if number % 10 == 3:
            eliminate_item(item, "unlucky", "ends in 3")
        if number % 10 == 7:
            continue  # removed without a word: it must still be accounted for
        kept.append(item)
        if number % 10 == 5:
            kept.append({"id": item["id"] + ".extra", "parent_id": item["id"], "instruction": item["instruction"] + " Twice."})
    return kept
'''


def test_a_user_step_gets_micro_batches_and_every_item_is_accounted_for(tmp_path):
    plugin = tmp_path / "batch_step.py"
    plugin.write_text(BATCH_STEP)
    settings = make_settings(tmp_path, data_path=_data(tmp_path, 80), max_steps=0, loop=1,
                             diversity=[f"{plugin}:shape"], evol_llm=fake_llm_config("evol", concurrency=16))
    values = run_workflow(settings, ScriptedChatModel())
    batches = [int(n) for n in plugin.with_suffix(".batches").read_text().split()]
    assert sum(batches) == 80 and max(batches) <= 64 and len(batches) < 80
    failures = _lines(tmp_path / "out" / "failures.jsonl")
    records = _lines(tmp_path / "out" / "records.jsonl")
    assert sorted(f["reason"] for f in failures) == ["removed_by_step"] * 8 + ["unlucky"] * 8
    extras = [r for r in records if r["id"].endswith(".shape1")]  # the run gives created items their ids
    assert len(extras) == 8 and all(r["added_by"] == f"{plugin}:shape" for r in extras)
    counts = values["level_counts"]["1"]
    assert counts == {"parents": 80, "records": 72, "failures": 16, "added": 8}
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["accounting_holds"]


def test_a_step_that_returns_something_malformed_ends_the_run_naming_it(tmp_path):
    plugin = tmp_path / "broken_step.py"
    plugin.write_text("async def broken(items, context):\n    return None\n")
    settings = make_settings(tmp_path, data_path=_data(tmp_path, 10), max_steps=0, loop=1,
                             diversity=[f"{plugin}:broken"])
    with pytest.raises(ConfigError, match="broken") as error:
        run_workflow(settings, ScriptedChatModel())
    assert "\n" not in str(error.value) and "must return a list" in str(error.value)
