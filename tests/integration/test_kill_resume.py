"""Issue 18, property (a): kill -9 at random points and resume with the same command.

`python run.py` runs as a real subprocess against a deterministic simulated endpoint on
127.0.0.1 that counts every request it receives; the test sends SIGKILL when that count
reaches each of a seeded set of kill points (some in the optimization phase, most in
generation), then runs the same command until it finishes. With `--diversity
dedup,breadth,<a step that creates items>` and planted near-duplicate twins:
- at concurrency 1 the resumed output is the uninterrupted one, line for line (as sets);
- at concurrency 16 it is consistent: no two items of the index are near-duplicates, every
  row is accounted for, and the index a resume rebuilds is the one the live run had;
- in both, run.json counts at least the requests the endpoint received.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from chat_server import ChatServer, shaped_answer
from conftest import REPO
from nodes.diversity import _picked
from record_store.near_duplicates import MEMBERSHIP_FILE, NearDuplicateIndex
from record_store.store import RecordStore

pytestmark = pytest.mark.integration

WORDS = ("amber basalt cedar dune ember fjord garnet harbor iris jasper kelp lagoon marble nectar obsidian prairie "
         "quartz reef sierra tundra umber valley willow xenon yarrow zephyr anvil bellows chisel dowel easel forge "
         "gimlet hinge ingot joist kiln lathe mallet notch orchard pumice quill rivet sextant trowel").split()
LEVEL_1 = " Give one example."
LEVEL_2 = " Add a counterexample too."
TWIN_TEXTS = ["Explain, step by step, how a harbour pilot brings a container ship through fog into a narrow port.",
              "Design a week of vegetarian school lunches under a fixed budget, with a shopping list for each day."]
ECHO_TEXT = "Catalogue the {words} of cove {k}, with a sketch and a habitat note for each."
BREADTH_RATIO, SEED = 0.3, 42
THRESHOLD = 0.8

STEP_FILE = '''
import zlib

from nodes.diversity import eliminate_item, new_item

WORDS = {words!r}


async def vary(items, context):
    """Eliminates one item in seven and, for another in seven, creates an unrelated new instruction."""
    kept = []
    for item in items:
        kind = zlib.crc32(item["id"].encode()) % 7
        if kind == 3:
            eliminate_item(item, "odd_one", "crc 3")
        kept.append(item)
        if kind == 5:
            words = [WORDS[(zlib.crc32(item["id"].encode()) >> shift) % len(WORDS)] for shift in (0, 5, 10, 15, 20)]
            kept.append(new_item(item, "Plan a beginner's checklist about " + ", ".join(words) + " for a weekend class."))
    return kept
'''


def words_for(text: str, n: int = 7) -> str:
    return ", ".join(random.Random(text).sample(WORDS, n))


def echo_text(k: str) -> str:
    return ECHO_TEXT.format(words=words_for(f"cove {k}", 6), k=k)


def answer(prompt: str, seed: int | None = None) -> str:
    """Deterministic per prompt. Twins: two seeds whose level-1 evolutions are one text. Echoes: a seed whose
    level-2 evolution is the very text of a breadth item made at level 1, which never joined the index."""
    if "<feedback>" in prompt or "### Case " in prompt:  # the optimizer's tasks: as the simulated endpoint answers
        return shaped_answer(prompt, seed)
    if "#Given Instruction#\n" in prompt:  # breadth
        given = prompt.rsplit("#Given Instruction#\n", 1)[1]
        if "[b" in given:
            k = given.split("[b", 1)[1].split("]", 1)[0]
            return f"#Final Instruction#\n{echo_text(k)}"
        return f"#Final Instruction#\nWrite a short field guide entry linking {words_for(given)}."
    if "#Instruction#\n" in prompt:
        instruction = prompt.rsplit("#Instruction#\n", 1)[1].strip()
        if "(twin " in instruction:
            pair = int(instruction.split("(twin ", 1)[1].split(")", 1)[0])
            return f"#Finally Rewritten Instruction#\n{TWIN_TEXTS[pair]}{LEVEL_1}"
        if instruction.startswith("Catalogue the"):  # an echo's breadth item evolves away from the echo
            return f"#Finally Rewritten Instruction#\nMap the shoreline habitats around {words_for(instruction, 8)}."
        if "[e" in instruction and LEVEL_1 in instruction:
            k = instruction.split("[e", 1)[1].split("]", 1)[0]
            return f"#Finally Rewritten Instruction#\n{echo_text(k)}"
        suffix = LEVEL_2 if LEVEL_1 in instruction else LEVEL_1
        return f"#Finally Rewritten Instruction#\n{instruction}{suffix}"
    return "A complete answer, with the reasoning laid out and one worked example at the end."


def seed_rows() -> list[dict]:
    rows = [{"id": f"s{n:02d}", "instruction": f"Describe {words_for(str(n), 9)} to a curious visitor."}
            for n in range(22)]
    for pair in range(len(TWIN_TEXTS)):
        rows += [{"id": f"t{pair}a", "instruction": f"Write a limerick about {words_for(f'a{pair}', 3)} (twin {pair})."},
                 {"id": f"t{pair}b", "instruction": f"List the uses of {words_for(f'b{pair}', 3)} (twin {pair})."}]
    # Echo pairs: the breadth item of b<k> (picked by id) has the text e<k> evolves into at level 2.
    breadth_ids = [f"b{n}" for n in range(200) if _picked(f"b{n}.L1", BREADTH_RATIO, SEED)][:2]
    for k, source in enumerate(breadth_ids):
        rows += [{"id": source, "instruction": f"Tell the story of {words_for(f'src{k}', 4)} [b{k}]."},
                 {"id": f"e{k}", "instruction": f"Sketch a museum panel on {words_for(f'echo{k}', 4)} [e{k}]."}]
    return rows


class Endpoint:
    """The simulated endpoint on its own event loop in a thread, so that the test can wait on subprocesses."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.server = ChatServer(latency=0.002, answer=answer)  # counts its chat requests
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def endpoint():
    running = Endpoint()
    yield running
    running.close()


def command(tmp_path: Path, url: str, concurrency: int, save: str) -> list[str]:
    data = tmp_path / "seeds.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in seed_rows()), encoding="utf-8")
    step = tmp_path / "vary_step.py"
    step.write_text(STEP_FILE.format(words=WORDS), encoding="utf-8")
    config = tmp_path / f"llm_{concurrency}.yaml"
    config.write_text(f"preset: local\nembedded: false\nbase_url: {url}\nparse_mode: strict\ntimeout: 10\n"
                      f"max_retries: 2\nmax_tokens: 200\nconcurrency: {concurrency}\n", encoding="utf-8")
    return [sys.executable, str(REPO / "run.py"), "--data-path", str(data), "--save-path", str(tmp_path / save),
            "--evol-llm-config", str(config), "--optim-llm-config", str(config), "--train-size", "4",
            "--dev-size", "3", "--batch-size", "2", "--max-steps", "1", "--candidate-size", "2", "--loop", "2",
            "--diversity", f"dedup,breadth,{step}:vary", "--breadth-ratio", str(BREADTH_RATIO),
            "--seed", str(SEED), "--quiet"]


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def run_with_kills(argv: list[str], server: ChatServer, kill_points: list[int]) -> int:
    """Kill -9 at each point (requests received since the start), resuming in between; returns the kills done."""
    kills = 0
    for point in kill_points:
        process = start(argv)
        while process.poll() is None and server.chat_requests < point:
            time.sleep(0.002)
        if process.poll() is not None:  # finished before this point: the rest are past the end
            finish(process)
            return kills
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
    finish(start(argv))
    return kills


def reference_run(argv: list[str], server: ChatServer) -> tuple[int, int]:
    """An uninterrupted run; returns its requests in the optimization phase and in all."""
    received_at: list[float] = []
    before = server.chat_requests
    process = start(argv)
    while process.poll() is None:
        while server.chat_requests - before > len(received_at):
            received_at.append(time.time())
        time.sleep(0.001)
    finish(process)
    run = json.loads((Path(argv[argv.index("--save-path") + 1]) / "run.json").read_text(encoding="utf-8"))
    # The first request opens the optimization phase; it lasts as long as run.json says.
    generation_start = received_at[0] + run["phase_seconds"]["optimization"]
    return sum(t < generation_start for t in received_at), server.chat_requests - before


def kill_points(rng: random.Random, optimization: int, total: int, in_optimization: int, in_generation: int) -> list[int]:
    """Seeded points, as counts of requests received since the run's start, a few requests apart."""
    points = rng.sample(range(2, max(2 + in_optimization, int(optimization * 0.6))), in_optimization)
    points += rng.sample(range(optimization + 2, int(total * 0.95)), in_generation)
    return sorted(points)


def lines(save: Path, name: str) -> list[str]:
    return (save / name).read_text(encoding="utf-8").splitlines()


def items(save: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in lines(save, name)]


def requests_in_run_json(save: Path) -> int:
    run = json.loads((save / "run.json").read_text(encoding="utf-8"))
    return sum(usage.get("requests", 0) for usage in run["token_usage"].values())


def assert_consistent(save: Path) -> None:
    """Every row accounted for, each (id, level) once, no near-duplicate pair in the index, and the index a
    resume rebuilds from the files equal to the one the live run had at the last level's end."""
    run = json.loads((save / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["accounting_holds"], run["counts"]
    written = items(save, "records.jsonl") + items(save, "failures.jsonl")
    keys = [(item["id"], item["level"]) for item in written]
    assert len(keys) == len(set(keys)), "an (id, level) written twice"
    records = {(item["id"], item["level"]) for item in items(save, "records.jsonl")}
    seeds = [(seed["root_id"], 0) for seed in items(save, "seeds.jsonl")]
    for item in written:  # every item's parent is a seed or a record of its level or the one before
        if item["level"] > 0:
            assert (item["parent_id"], item["level"] - 1) in records | set(seeds) or \
                   (item["parent_id"], item["level"]) in records | {(i["id"], i["level"]) for i in written}, item
    for root, _ in seeds:  # every seed has its level-1 child, recorded or failed
        assert (f"{root}.L1", 1) in set(keys), root
    rebuilt = NearDuplicateIndex.from_store(RecordStore(save), THRESHOLD)
    live = json.loads((save / MEMBERSHIP_FILE).read_text(encoding="utf-8"))
    assert live == {"level": 2, **rebuilt.membership()}
    members = [item for item in items(save, "seeds.jsonl") + written
               if item["level"] == 0 and "stage" not in item or item.get("in_dedup_index")]
    for item in members:
        assert rebuilt.find(item["instruction"], exclude_root=item["root_id"]) is None, item["id"]
    duplicates = [item for item in written if item.get("reason") == "near_duplicate" and item["level"] > 0]
    assert len(duplicates) >= len(TWIN_TEXTS)  # the planted twins were caught


KILLS = {1: (4, 8), 16: (3, 7)}
"""Per concurrency, kill points in the optimization phase and in generation: 22 in all."""


@pytest.mark.parametrize("concurrency", sorted(KILLS))
def test_kill_9_at_random_points_and_resume_gives_the_uninterrupted_output(tmp_path, endpoint, concurrency):
    rng = random.Random(18 + concurrency)
    server = endpoint.server
    in_optimization, in_generation = KILLS[concurrency]
    reference = command(tmp_path, server.base_url, concurrency, "ref")
    optimization, total = reference_run(reference, server)
    killed = command(tmp_path, server.base_url, concurrency, "cut")
    before = server.chat_requests
    points = [before + p for p in kill_points(rng, optimization, total, in_optimization, in_generation)]
    kills = run_with_kills(killed, server, points)
    sent = server.chat_requests - before
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    print(f"\n[kill -9] concurrency {concurrency}: {kills} kills at {[p - before for p in points]}; "
          f"{sent} requests against {total} uninterrupted ({optimization} in optimization)")
    assert kills == len(points)
    assert requests_in_run_json(cut) >= sent, "run.json counts fewer requests than the endpoint received"
    assert requests_in_run_json(ref) >= total
    assert_consistent(ref)
    assert_consistent(cut)
    if concurrency == 1:
        for name in ("records.jsonl", "failures.jsonl"):
            assert set(lines(cut, name)) == set(lines(ref, name)), name
            assert len(lines(cut, name)) == len(lines(ref, name)), name
        assert lines(cut, "seeds.jsonl") == lines(ref, "seeds.jsonl")
