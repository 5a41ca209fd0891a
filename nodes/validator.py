"""Validator: scores methods on the fixed dev set by their failure rate.

The incumbent is scored on every dev item; a candidate on the items of this step's order
until its stop rule (method_selection.race: full, exact or race) says it may stop.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Callable

from langchain_core.runnables import RunnableConfig

from resources import RunResources, emit, resources_from, timed
from nodes.sibling_calls import gather_or_cancel
from method_selection.evidence import evidence_better
from method_selection.race import (RaceResult, RaceRule, go_on, heat_size, paired_record, race_rounds, selection_for,
                                   stop_rule)
from state import CandidateState, Case, MethodScore, WorkflowState
from llm_tasks.evolution import evolve
from llm_tasks.answers import respond
from llm_tasks.judge import judge_evolution, judge_response


async def _dev_case(case: Case, method: str, resources: RunResources) -> dict:
    llm, rules = resources.llms.evol, resources.rules
    judging = resources.settings.failure_judge != "off"
    evolved = await evolve(llm, method, case["instruction"], rules)
    judge = resources.llms.judge_llm
    failure = evolved.failure or (await judge_evolution(judge, case["instruction"], evolved.text) if judging else None)
    if failure:
        return {"case_id": case["case_id"], "stage": "evolve", "reason": failure.reason,
                "text": evolved.candidate_text}
    answer = await respond(llm, evolved.text, rules)
    if judging and answer.failure is None:
        answer = answer.judged(await judge_response(judge, evolved.text, answer.raw))
    gain = len(evolved.text) / max(1, len(case["instruction"]))
    result = {"case_id": case["case_id"], "text": evolved.text, "gain": gain, "lenient": evolved.lenient}
    if answer.failure:
        result.update(stage="respond", reason=answer.failure.reason)
    return result


def wilson_interval(failures: int, total: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval [low, high] of a failure rate (95% for z=1.96); [0, 1] with no items.

    Unlike rate +- z*SE it stays inside [0, 1] and is not zero-width at 0 or 6 failures of 6.
    """
    if total <= 0:
        return [0.0, 1.0]
    rate, spread = failures / total, z * z / total
    centre = (rate + spread / 2) / (1 + spread)
    half = z * math.sqrt(rate * (1 - rate) / total + spread / (4 * total)) / (1 + spread)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


EXAMPLE_KEYS = ("case_id", "reason", "text", "stage", "gain", "lenient")
"""What a score keeps of each dev case: enough to merge a race's items with the held-out ones."""


def failed(example: dict) -> bool:
    """Whether a per-case result (or a score's example of it) is a failure."""
    return example.get("reason") is not None


def result_of(example: dict) -> dict:
    """A score's example back as a per-case result (None stands for a key the result did not have)."""
    return {k: v for k, v in example.items() if v is not None}


def summarize(method_id: str, results: list[dict]) -> MethodScore:
    """A dev score from per-case results; complexity gain over the cases that evolved."""
    failures = Counter(r["reason"] for r in results if "reason" in r)
    gains = [r["gain"] for r in results if "gain" in r]
    return MethodScore(
        method_id=method_id,
        failure_rate=round(sum(failures.values()) / max(1, len(results)), 4),
        failures_by_reason=dict(failures.most_common()),
        complexity_gain=round(sum(gains) / len(gains), 4) if gains else 0.0,
        dev_size=len(results),
        failure_rate_interval=wilson_interval(sum(failures.values()), len(results)),
        lenient_parses=sum(1 for r in results if r.get("lenient")),
        examples=[{k: r.get(k) for k in EXAMPLE_KEYS} for r in results],
    )


def outcomes_of(results: list[dict]) -> list[bool]:
    """Per scored item, in order: did the method fail it?"""
    return [failed(r) for r in results]


def calls_of(results: list[dict]) -> int:
    """LLM calls the scored items cost: an evolution each, and an answer where the evolution passed."""
    return sum(1 if r.get("stage") == "evolve" else 2 for r in results)


StopRule = Callable[[list[bool]], "str | None"]


async def score_in_order(method_id: str, method: str, cases: list[Case], resources: RunResources,
                         stop: StopRule = lambda outcomes: None, window: int | None = None) -> tuple[list[dict], str]:
    """Per-case results of a method on `cases` in their order, up to the first prefix `stop` ends.

    Up to `window` cases (default: the evol LLM's concurrency) run at once, started in order.
    `stop` sees the outcomes of the longest finished prefix, one item at a time, so where a method stops
    depends only on the outcomes in order, never on which answer came back first: the same
    decision on every run and on resume. Cases still in flight when it stops are cancelled.
    Returns the results of the prefix and the verdict ("complete" when nothing stopped it).
    """
    window = max(1, window or resources.llms.evol.config.total_concurrency())
    finished: dict[int, dict] = {}
    prefix: list[dict] = []
    verdict = stop([]) if cases else "complete"
    running: dict[asyncio.Task, int] = {}
    launched = 0
    try:
        while verdict is None:
            while launched < len(cases) and len(running) < window:
                running[asyncio.ensure_future(_dev_case(cases[launched], method, resources))] = launched
                launched += 1
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                finished[running.pop(task)] = task.result()
            while verdict is None and len(prefix) in finished:
                prefix.append(finished.pop(len(prefix)))
                verdict = stop(outcomes_of(prefix)) or ("complete" if len(prefix) == len(cases) else None)
                emit({"event": "validation", "method_id": method_id, "done": len(prefix), "total": len(cases),
                      **({"verdict": verdict} if verdict else {})})
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return prefix, verdict


def merged_score(method_id: str, earlier: MethodScore | None, results: list[dict], dev: list[Case]) -> MethodScore:
    """The score over the whole dev set from the items scored before (a race) and the rest, in dev order.

    `held_out` is the score on the items scored now: those that did not select the method.
    """
    before = {e["case_id"]: e for e in (earlier or {}).get("examples") or []}
    now = {case["case_id"]: r for case, r in zip((c for c in dev if c["case_id"] not in before), results)}
    combined = [result_of(before[c["case_id"]]) if c["case_id"] in before else now[c["case_id"]] for c in dev]
    score = summarize(method_id, combined)
    score["calls"] = (earlier or {}).get("calls", 0) + calls_of(results)
    if earlier and earlier.get("selected_on"):
        score["selected_on"] = earlier["selected_on"]
        score["race"] = earlier.get("race")
        score["selection_estimate"] = {k: earlier[k] for k in ("failure_rate", "dev_size", "failure_rate_interval")}
    if results and before:
        held = summarize(method_id, results)
        score["held_out"] = {k: held[k] for k in ("failure_rate", "dev_size", "failure_rate_interval")}
    return score


def missing_cases(score: MethodScore | None, dev: list[Case]) -> list[Case]:
    """The dev cases a method has no result on yet: all for a new one, the held-out ones after a race."""
    scored = {e["case_id"] for e in (score or {}).get("examples") or []}
    return [case for case in dev if case["case_id"] not in scored]


@timed("optimization")
async def validator(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads the incumbent, its score so far and the dev set; writes its score on the whole dev set.

    Runs for e0 before the first candidates are validated (beside the first trajectories), and for
    a method a race adopted on part of the dev set: the rest is its held-out re-estimate, which
    the last step's record shows beside the race's estimate.
    """
    earlier = state.method_score
    cases = missing_cases(earlier, state.dev)
    results, _ = await score_in_order(state.method_id, state.method, cases, resources_from(config))
    score = merged_score(state.method_id, earlier, results, state.dev)
    update: dict = {"scores": [score], "method_score": score}
    if state.e0_score is None and state.method_id == "e0":
        update["e0_score"] = score
    if state.history and state.history[-1]["kept_method_id"] == state.method_id and "held_out" in score:
        update["history"] = state.history[:-1] + [{**state.history[-1], "kept_held_out": score["held_out"]}]
    return update


def race_rule(settings) -> RaceRule:
    return RaceRule(selection_for(settings.selection, settings.dev_size), settings.selection_confidence,
                    settings.min_improvement)


def race_score(method_id: str, rule: RaceRule, bar: list[bool], results: list[dict], verdict: str,
               pool: int) -> MethodScore:
    """A candidate's score on the items it was scored on, with its paired record against the incumbent."""
    wins, losses = paired_record(bar, outcomes_of(results))
    score = summarize(method_id, results)
    score["calls"] = calls_of(results)
    score["race"] = {"selection": rule.selection, "verdict": verdict, "items": len(results), "pool": pool,
                     "wins": wins, "losses": losses, "evidence_better": round(evidence_better(wins, losses), 4)}
    return score


def branch_window(resources: RunResources) -> int:
    """The m branches share the LLM's slots: each keeps its share in flight, so few answers arrive past its stop."""
    return math.ceil(resources.llms.evol.config.total_concurrency() / resources.settings.candidate_size)


@timed("optimization")
async def candidate_validator(state: CandidateState, config: RunnableConfig) -> dict:
    """Reads the branch's usable candidate, the dev cases in this step's order and the incumbent's
    outcomes on them; writes its score on the items it was scored on (a race: at most the heat), with
    its race record."""
    resources = resources_from(config)
    candidate, rule = state.candidates[-1], race_rule(resources.settings)
    by_id = {case["case_id"]: case for case in state.dev}
    cases = [by_id[i] for i in state.race_order]
    limit = heat_size(len(cases), resources.settings.candidate_size) if rule.selection == "race" else None
    results, verdict = await score_in_order(candidate["method_id"], candidate["text"], cases, resources,
                                            stop_rule(rule, state.bar, limit), branch_window(resources))
    return {"scores": [race_score(candidate["method_id"], rule, state.bar, results, verdict, len(cases))]}


def race_record(score: MethodScore) -> RaceResult:
    """A candidate's validation as method_selection sees it (a score without a race record was fully scored)."""
    race = score.get("race") or {}
    return RaceResult(score["method_id"], round(score["failure_rate"] * score["dev_size"]), score["dev_size"],
                      race.get("wins", 0), race.get("losses", 0), race.get("verdict", "complete"))


async def _race_on(score: MethodScore, text: str, rule: RaceRule, state: WorkflowState, limit: int,
                   resources: RunResources, window: int) -> MethodScore:
    """A candidate's score after one more round: from where its last round ended to `limit` items."""
    by_id = {case["case_id"]: case for case in state.dev}
    cases = [by_id[i] for i in state.race_order]
    earlier = [result_of(e) for e in score["examples"]]
    results, verdict = await score_in_order(score["method_id"], text, cases[len(earlier):limit], resources,
                                            stop_rule(rule, state.bar, limit, outcomes_of(earlier)), window)
    raced = race_score(score["method_id"], rule, state.bar, earlier + results, verdict, len(cases))
    raced["calls"] = score.get("calls", 0) + calls_of(results)
    raced["race"]["rounds"] = score["race"].get("rounds", 1) + 1
    return raced


def in_sample_order(scores: list[MethodScore], candidates: list) -> list[MethodScore]:
    """Scores in the order of their candidates' sample index, not of the branches' finishing: ties go to the first sample."""
    sample = {c["method_id"]: c["sample_index"] for c in candidates}
    return sorted(scores, key=lambda s: sample.get(s["method_id"], -1))


@timed("optimization")
async def later_rounds(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads the step's candidate scores after a race's heat, the dev order and the bar; writes the scores
    of the candidates that went on to later rounds (method_selection.race.race_rounds), each over all its
    rounds. Nothing when the step is no race."""
    resources = resources_from(config)
    rule = race_rule(resources.settings)
    if rule.selection != "race":
        return {}
    texts = {c["method_id"]: c["text"] for c in state.candidates}
    current = {s["method_id"]: s for s in in_sample_order(state.scores, state.candidates) if s["method_id"] in texts}
    rounds = race_rounds(len(state.race_order), resources.settings.candidate_size)
    alive = list(current)
    for (_, keep), (limit, _) in zip(rounds, rounds[1:]):
        going = go_on([race_record(current[method_id]) for method_id in alive], keep)
        alive = [r.method_id for r in going]
        if not going:
            break
        window = math.ceil(resources.llms.evol.config.total_concurrency() / len(going))
        # The survivors of a round race on side by side, each with its share of the slots.
        raced = await gather_or_cancel(_race_on(current[r.method_id], texts[r.method_id], rule, state, limit,
                                                resources, window) for r in going)
        current.update({score["method_id"]: score for score in raced})
    return {"raced": [s for s in current.values() if s["race"].get("rounds", 1) > 1]}
