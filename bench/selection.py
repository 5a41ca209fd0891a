"""The selection bench (issue 21): how well each selection rule picks methods whose true failure rate is known.

A world: dev and train items with a difficulty d ~ N(0, DIFFICULTY_SD), methods with a skill s;
a method fails an item when u(method, item) < sigmoid(d - s + c), u a hash-uniform (the same
answer for the same method and item, as an evolver at temperature 0), c set so that e0 (skill 0)
truly fails 20% of all items. A revision's skill is its parent's plus N(0, REVISION_SD). The true
failure rate of a method is the mean of sigmoid(d - s + c) over the item population, not over
the run's dev set: it is what the run cannot see.

    python bench/selection.py --worlds 200                  # in-process, every setting
    python bench/selection.py --end-to-end --worlds 4       # run.py against a loopback server

Both modes use the same selection code (method_selection.race). The in-process mode replays
the optimization loop of graph/workflow.py with the world's outcomes in place of LLM calls;
the end-to-end mode runs `run.main` against tests/chat_server.ChatServer answering from the
world (`WorldAnswers`), and reads the kept method and its requests from the run's files.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import statistics
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from method_selection.race import (RaceRule, choose, failure_shares, hardest_first, next_parent,  # noqa: E402
                                   race_order, simulate_step)

DIFFICULTY_SD = 1.5
REVISION_SD = 0.3
E0_RATE = 0.2
SKILL_TAG = "Calibration note"


def uniform(*parts) -> float:
    """A uniform in [0, 1) fixed by its parts."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normal(*parts) -> float:
    """A standard normal fixed by its parts (Box-Muller on two hash-uniforms)."""
    u1, u2 = max(1e-12, uniform(*parts, "a")), uniform(*parts, "b")
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@dataclass
class World:
    """One seeded world: item difficulties by item key, and the offset c that puts e0 at 20%."""

    seed: int
    revision_mean: float = 0.0
    """The mean change of skill from a revision (0: as likely better as worse than its parent)."""
    population: list[float] = field(default_factory=list)
    """Difficulties of a large item sample: a method's true failure rate is its mean failure chance on them."""
    offset: float = 0.0

    def __post_init__(self):
        self.population = [DIFFICULTY_SD * normal(self.seed, "population", i) for i in range(4000)]
        low, high = -10.0, 10.0
        for _ in range(60):  # the c for which e0's true rate is E0_RATE
            mid = (low + high) / 2
            low, high = (mid, high) if self.true_rate(0.0, mid) < E0_RATE else (low, mid)
        self.offset = (low + high) / 2

    def true_rate(self, skill: float, offset: float | None = None) -> float:
        c = self.offset if offset is None else offset
        return sum(sigmoid(d - skill + c) for d in self.population) / len(self.population)

    def difficulty(self, item: str) -> float:
        return DIFFICULTY_SD * normal(self.seed, "item", item)

    def fails(self, method: str, skill: float, item: str) -> bool:
        return uniform(self.seed, "outcome", method, item) < sigmoid(self.difficulty(item) - skill + self.offset)

    def revision_skill(self, parent: float, *draw) -> float:
        return parent + self.revision_mean + REVISION_SD * normal(self.seed, "revision", *draw)


# --- in-process: the workflow's optimization loop with world outcomes ---------------------------


@dataclass
class Setting:
    name: str
    selection: str
    dev: int
    m: int


SETTINGS = [Setting("full, dev 50", "full", 50, 5), Setting("exact, dev 50", "exact", 50, 5),
            Setting("full, dev 200", "full", 200, 5), Setting("exact, dev 200", "exact", 200, 5),
            Setting("race, dev 200, m 5", "race", 200, 5), Setting("race, dev 200, m 10", "race", 200, 10),
            Setting("race, dev 200, m 15", "race", 200, 15), Setting("race, dev 200, m 20", "race", 200, 20)]


@dataclass
class Method:
    key: str
    skill: float
    selected_on: list[int] | None = None


def item_calls(failed: bool) -> int:
    """A dev item costs an evolution, and an answer when the evolution did not fail."""
    return 1 if failed else 2


def simulate_run(world: World, setting: Setting, steps: int = 6, patience: int = 2, batch: int = 10,
                 confidence: float = 0.9) -> dict:
    """One optimization as graph/workflow.py runs it: calls, the kept method, every method seen."""
    rule = RaceRule(setting.selection, confidence, 1)
    pool = list(range(setting.dev))
    incumbent, parent = Method("e0", 0.0), None
    outcome = {i: world.fails("e0", 0.0, f"dev{i}") for i in pool}
    scored: dict[str, dict[int, bool]] = {"e0": dict(outcome)}  # every method's outcomes, for exact's order
    calls = {"trajectories": 0, "optimizer": 0, "validation": 0}
    calls["validation"] += sum(item_calls(f) for f in outcome.values())
    seen, stale = [incumbent.skill], 0
    for step in range(1, steps + 1):
        calls["trajectories"] += batch
        calls["optimizer"] += 2 * setting.m
        order = {"race": lambda: race_order(pool, incumbent.selected_on),
                 "exact": lambda: hardest_first(pool, outcome, failure_shares(scored.values()))}.get(setting.selection,
                                                                                        lambda: pool)()
        bar = [outcome[i] for i in order]
        revised = parent or incumbent
        keys = [f"{revised.key}>{step}.{sample}" for sample in range(setting.m)]
        skills = [world.revision_skill(revised.skill, key) for key in keys]
        seen.extend(skills)
        step_records = simulate_step(rule, bar, lambda c, k: world.fails(keys[c], skills[c], f"dev{order[k]}"),
                                     setting.m)
        results = [replace(record, method_id=keys[c]) for c, (record, _) in enumerate(step_records)]
        candidates = {keys[c]: (skills[c], outcomes) for c, (_, outcomes) in enumerate(step_records)}
        for key, (_, outcomes) in candidates.items():
            calls["validation"] += sum(map(item_calls, outcomes))
            scored[key] = dict(zip(order, outcomes))
        chosen = choose(rule, sum(bar), results)
        if chosen is None:
            ahead = next_parent(results) if setting.selection == "race" else None
            if ahead is not None:
                parent, stale = Method(ahead.method_id, candidates[ahead.method_id][0]), 0
            else:
                stale += 1
        else:
            stale, parent = 0, None
            skill, outcomes = candidates[chosen.method_id]
            raced = order[:len(outcomes)]
            incumbent = Method(chosen.method_id, skill, raced if setting.selection == "race" else None)
            new = {i: f for i, f in zip(raced, outcomes)}
            for i in pool:  # the held-out re-estimate completes the new bar on the items it was not raced on
                if i not in new:
                    new[i] = world.fails(chosen.method_id, skill, f"dev{i}")
                    calls["validation"] += item_calls(new[i])
            outcome = scored[chosen.method_id] = new
        if stale >= patience:
            break
    kept, best_seen = world.true_rate(incumbent.skill), world.true_rate(max(seen))
    return {"calls": sum(calls.values()), "validation_calls": calls["validation"], "kept_rate": kept,
            "worse_than_e0": kept > E0_RATE + 1e-9, "regret": kept - best_seen, "kept": incumbent.key}


def table(rows: list[dict]) -> str:
    head = ("| setting | worlds | optimization calls (mean) | validation calls | true failure rate of the kept "
            "method (mean) | runs where it is truly worse than e0 | regret vs the best method seen (mean) |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['worlds']} | {row['calls']:.0f} | {row['validation_calls']:.0f} | "
                     f"{row['kept_rate']:.3f} | {row['worse']} ({row['worse_share']:.1%}) | {row['regret']:.3f} |")
    return "\n".join(lines)


def summarize(setting: str, runs: list[dict]) -> dict:
    worse = sum(r["worse_than_e0"] for r in runs)
    return {"setting": setting, "worlds": len(runs), "calls": statistics.mean(r["calls"] for r in runs),
            "validation_calls": statistics.mean(r["validation_calls"] for r in runs),
            "kept_rate": statistics.mean(r["kept_rate"] for r in runs), "worse": worse,
            "worse_share": worse / len(runs), "regret": statistics.mean(r["regret"] for r in runs)}


def in_process(worlds: int, steps: int, settings: list[Setting], revision_mean: float = 0.0,
               first: int = 0) -> tuple[list[dict], dict]:
    rows, runs = [], {}
    for setting in settings:
        runs[setting.name] = [simulate_run(World(seed, revision_mean), setting, steps=steps)
                              for seed in range(first, first + worlds)]
        rows.append(summarize(setting.name, runs[setting.name]))
    return rows, runs


# --- end to end: run.py against a loopback endpoint answering from the world --------------------

GOOD_TAIL = " Explain your reasoning step by step and give one concrete example."
TAG = re.compile(SKILL_TAG + r" (\w+) ([+-]\d+\.\d+):")


def method_identity(method: str) -> tuple[str, float]:
    """The world's hidden key and skill of a method: its last calibration note; e0 has none.

    Nothing in autoevol reads the note; it is how the simulated endpoint knows which method it is applying.
    """
    tags = TAG.findall(method)
    return (tags[-1][0], float(tags[-1][1])) if tags else ("e0", 0.0)


class WorldAnswers:
    """The simulated endpoint's answers (tests/chat_server.ChatServer's `answer`) in one world."""

    def __init__(self, world: World):
        self.world = world
        self.lock = threading.Lock()

    def __call__(self, prompt: str, seed: int | None = None) -> str:
        if "```Optimized Method" in prompt and "<feedback>" in prompt:
            method = prompt.split("<method>\n", 1)[1].split("\n</method>", 1)[0]
            parent, skill = method_identity(method)
            key = hashlib.sha256(f"{parent}:{seed}".encode()).hexdigest()[:10]
            child = self.world.revision_skill(skill, key)
            return (f"Revised.\n```Optimized Method\n{method}\n{SKILL_TAG} {key} {child:+.5f}: keep every number and "
                    f"every name the instruction gives.\n```")
        if "### Case " in prompt and "<method>" in prompt:
            cases = re.findall(r"### Case (\d+)", prompt)
            return "\n".join(f"Case {c}: evolved." for c in cases) + "\nSummary: no systematic weakness."
        if "#Instruction#\n" in prompt:
            method, instruction = (part.strip() for part in prompt.rsplit("#Instruction#\n", 1))
            key, skill = method_identity(method)
            if self.world.fails(key, skill, instruction):
                return f"#Finally Rewritten Instruction#\n{instruction}"  # unchanged: a rule rejects it
            # Each method words its rewrite its own way, so no two methods share an answer from the cache.
            return f"#Finally Rewritten Instruction#\n{instruction}{GOOD_TAIL} (Style {key}.)"
        return "A complete answer: the background first, then the reasoning, then one worked example."


def world_data(path: Path, rows: int, seed: int) -> Path:
    """Distinct English instructions; their text is the world's item key."""
    rng = random.Random(seed)
    words = ("river market winter engine garden theory signal harbor violin copper orbit ledger meadow canyon "
             "pixel sonnet glacier tariff compass lantern quartz mosaic thunder orchard voltage").split()
    lines = [json.dumps({"id": f"w{i}", "instruction": f"Task {i}: describe how a {rng.choice(words)} relates to a "
                                                       f"{rng.choice(words)} and a {rng.choice(words)}."})
             for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class WorldServer:
    """A ChatServer answering from one world, on its own event loop in a thread of the bench."""

    def __init__(self, answers: WorldAnswers, latency: float = 0.0):
        from chat_server import ChatServer

        self.server = ChatServer(latency=latency, answer=answers)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve():
            async with self.server:
                self.ready.set()
                self.stopped = asyncio.Event()
                await self.stopped.wait()

        self.loop.run_until_complete(serve())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(30)


def end_to_end_run(world: World, setting: Setting, work: Path, steps: int = 6, patience: int = 2,
                   batch: int = 10, train: int = 60) -> dict:
    """run.py in a child process against the world's endpoint; the kept method's true rate from method.txt."""
    import os
    import subprocess

    server = WorldServer(WorldAnswers(world))
    try:
        config = work / "world.yaml"
        config.write_text(f"preset: openai\nbase_url: {server.server.base_url}\nmodel: world\napi_key_env: WORLD_KEY\n"
                          "concurrency: 16\nmax_tokens: 256\ntimeout: 120\nmax_retries: 3\ntemperature: 0.6\n"
                          "seed: 0\n", encoding="utf-8")
        data = world_data(work / "data.jsonl", train + setting.dev, world.seed)
        out = work / "out"
        command = [sys.executable, str(REPO / "run.py"), "--data-path", str(data), "--train-size", str(train),
                   "--dev-size", str(setting.dev), "--batch-size", str(batch), "--candidate-size", str(setting.m),
                   "--max-steps", str(steps), "--patience", str(patience), "--loop", "1", "--test-run",
                   "--selection", setting.selection, "--diversity", "none", "--evol-llm-config", str(config),
                   "--optim-llm-config", str(config), "--save-path", str(out), "--quiet", "--overwrite"]
        result = subprocess.run(command, cwd=REPO, env={**os.environ, "WORLD_KEY": "world"}, capture_output=True,
                                text=True, timeout=3600)
        if result.returncode != 0:
            raise SystemExit(f"run.py failed: {result.stderr[-2000:]}")
        served = server.server.served
    finally:
        server.close()
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    level = run["counts"]["levels"]["1"]
    generation_calls = level["parents"] + level["records"]  # an evolution each, an answer per record
    _, kept_skill = method_identity((out / "method.txt").read_text(encoding="utf-8"))
    seen = [0.0] + [method_identity(c.get("text") or c.get("raw") or "")[1]
                    for step in run["history"] for c in step["candidates"]]
    kept = world.true_rate(kept_skill)
    # Validation: every candidate's dev calls, and each incumbent's beyond what it spent as a candidate
    # (e0's whole pass; a raced-in method's held-out items).
    incumbents = [run["e0_score"]] + [s["incumbent"]["score"] for s in run["history"][1:]] + [run["final_score"]]
    merged = {score["method_id"]: score.get("calls", 0) for score in incumbents if score}
    as_candidate = {c["method_id"]: (c.get("score") or {}).get("calls", 0)
                    for s in run["history"] for c in s["candidates"]}
    validation = sum(as_candidate.values()) + sum(calls - as_candidate.get(m, 0) for m, calls in merged.items())
    return {"calls": served - generation_calls, "validation_calls": validation,
            "kept_rate": kept,
            "worse_than_e0": kept > E0_RATE + 1e-9, "regret": kept - world.true_rate(max(seen)),
            "kept": run["method_id"], "decisions": [s["kept_method_id"] for s in run["history"]]}


def end_to_end(worlds: int, steps: int, settings: list[Setting], revision_mean: float = 0.0,
               first: int = 0) -> tuple[list[dict], dict]:
    rows, runs = [], {}
    for setting in settings:
        results = []
        for seed in range(first, first + worlds):
            with tempfile.TemporaryDirectory(prefix="autoevol-selection-") as work:
                results.append(end_to_end_run(World(seed, revision_mean), setting, Path(work), steps=steps))
            print(f"  {setting.name}, world {seed}: kept {results[-1]['kept']} "
                  f"(true {results[-1]['kept_rate']:.3f}), {results[-1]['calls']} calls", file=sys.stderr, flush=True)
        runs[setting.name] = results
        rows.append(summarize(setting.name, results))
    return rows, runs


def same_decisions(runs: dict, first: str, second: str) -> bool:
    return [r["kept"] for r in runs.get(first, [])] == [r["kept"] for r in runs.get(second, [])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--first-world", type=int, default=0,
                        help="seed of the first world: worlds other than those a setting was chosen on")
    parser.add_argument("--end-to-end", action="store_true", help="run.py against a loopback endpoint per world")
    parser.add_argument("--revision-mean", type=float, default=0.0,
                        help="mean skill change of a revision (negative: most revisions are worse than their parent)")
    parser.add_argument("--settings", default="", help="';'-separated setting names to run (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in SETTINGS if not args.settings or s.name in args.settings.split(";")]
    rows, runs = (end_to_end if args.end_to_end else in_process)(args.worlds, args.steps, chosen, args.revision_mean,
                                                                 args.first_world)
    print(table(rows))
    for dev in (50, 200):
        if f"full, dev {dev}" in runs and f"exact, dev {dev}" in runs:
            print(f"exact pruning, dev {dev}: same kept method as full evaluation in every world: "
                  f"{same_decisions(runs, f'full, dev {dev}', f'exact, dev {dev}')}")
    name = f"selection_results{'_end_to_end' if args.end_to_end else ''}.json"
    (BENCH / name).write_text(json.dumps({"end_to_end": args.end_to_end, "revision_mean": args.revision_mean,
                                          "worlds": args.worlds, "first_world": args.first_world, "rows": rows},
                                         indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
