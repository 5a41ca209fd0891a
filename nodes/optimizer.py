"""Optimizer: rewrites the method from one feedback sample into a candidate."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from llm_access.client import LLMCallFailed
from resources import resources_from, timed
from state import Candidate, OptimizationTask
from llm_tasks.optimization import optimize


def candidate_id(step: int, sample_index: int) -> str:
    """Ids like s1c0: step 1, candidate sample 0."""
    return f"s{step}c{sample_index}"


@timed("optimization")
async def optimizer(task: OptimizationTask, config: RunnableConfig) -> dict:
    """Reads the method and one feedback; writes one candidate, unusable ones recorded with why."""
    llm = resources_from(config).llms.optim
    method_id = candidate_id(task["step"], task["sample_index"])
    try:
        parsed, raw = await optimize(llm, task["method"], task["feedback"], task["sample_index"])
    except LLMCallFailed as exc:
        parse = "unparseable" if exc.reason == "unparseable" else "llm_error"
        return {"candidates": [Candidate(method_id=method_id, sample_index=task["sample_index"], text=None,
                                         parse=parse, raw=exc.detail or str(exc))]}
    parse = "lenient" if parsed.lenient else "marker"
    return {"candidates": [Candidate(method_id=method_id, sample_index=task["sample_index"], text=parsed.text,
                                     parse=parse, raw=raw)]}
