"""Validator: scores one method on the fixed dev set by its failure rate."""

from __future__ import annotations

import math
from collections import Counter

from langchain_core.runnables import RunnableConfig

from resources import RunResources, emit, resources_from, timed
from state import CandidateState, Case, MethodScore, ValidationTask
from llm_tasks.evolution import evolve
from llm_tasks.answers import respond
from nodes.sibling_calls import gather_or_cancel
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
        examples=[{k: r.get(k) for k in ("case_id", "reason", "text")} for r in results],
    )


async def score_method(method_id: str, method: str, dev: list[Case], resources: RunResources) -> MethodScore:
    """A method's dev score; the dev cases run concurrently, each reported as it finishes."""
    done = 0

    async def scored(case: Case) -> dict:
        nonlocal done
        result = await _dev_case(case, method, resources)
        done += 1
        emit({"event": "validation", "method_id": method_id, "done": done, "total": len(dev)})
        return result

    results = await gather_or_cancel(scored(case) for case in dev)
    return summarize(method_id, list(results))


@timed("optimization")
async def validator(task: ValidationTask, config: RunnableConfig) -> dict:
    """Reads one method (the incumbent) from a Send and the dev set; writes its dev score."""
    score = await score_method(task["method_id"], task["method"], task["dev"], resources_from(config))
    return {"scores": [score]}


@timed("optimization")
async def candidate_validator(state: CandidateState, config: RunnableConfig) -> dict:
    """Reads the branch's usable candidate and the dev set; writes its dev score."""
    candidate = state.candidates[-1]
    score = await score_method(candidate["method_id"], candidate["text"], state.dev, resources_from(config))
    return {"scores": [score]}
