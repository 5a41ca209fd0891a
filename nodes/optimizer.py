"""Optimizer: rewrites the method from one branch's feedback into a candidate."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from failure_checks.markers import ParsedText
from failure_checks.rules import FailureRules
from llm_access.client import LLMCallFailed
from resources import resources_from, timed
from state import Candidate, CandidateState
from llm_tasks.optimization import optimize


def candidate_id(step: int, sample_index: int) -> str:
    """Ids like s1c0: step 1, candidate sample 0."""
    return f"s{step}c{sample_index}"


def draw_index(step: int, sample_index: int, candidate_size: int) -> int:
    """The sample index sent to the LLM (answer cache key and seed): distinct for every step and sample.

    Step 1 draws 0..m-1, step 2 m..2m-1, and so on, so a step whose prompts repeat an earlier
    step's (same incumbent, same feedback) still draws new candidates instead of cached copies.
    """
    return (step - 1) * candidate_size + sample_index


def gated_candidate(method_id: str, sample_index: int, parsed: ParsedText, raw: str, incumbent: str,
                    rules: FailureRules) -> Candidate:
    """A parsed candidate, or a rejected one (text None, with the reason) when the method gate refuses it."""
    parse = "lenient" if parsed.lenient else "marker"
    failure = rules.check_method(parsed.text, incumbent) if parsed.text else None
    if failure:
        return Candidate(method_id=method_id, sample_index=sample_index, text=None, parse=parse, raw=raw,
                         status="rejected", rejection={"reason": failure.reason, "detail": failure.detail})
    return Candidate(method_id=method_id, sample_index=sample_index, text=parsed.text, parse=parse, raw=raw,
                     status="usable" if parsed.text else "unusable", rejection=None)


@timed("optimization")
async def optimizer(state: CandidateState, config: RunnableConfig) -> dict:
    """Reads the incumbent and the branch's feedback; writes one candidate, unusable or rejected ones with why."""
    resources = resources_from(config)
    method_id = candidate_id(state.step, state.sample_index)
    try:
        parsed, raw = await optimize(resources.llms.optim, state.method, state.feedback[-1]["text"],
                                     draw_index(state.step, state.sample_index, resources.settings.candidate_size))
    except LLMCallFailed as exc:
        parse = "unparseable" if exc.reason == "unparseable" else "llm_error"
        return {"candidates": [Candidate(method_id=method_id, sample_index=state.sample_index, text=None,
                                         parse=parse, raw=exc.detail or str(exc), status="unusable", rejection=None)]}
    return {"candidates": [gated_candidate(method_id, state.sample_index, parsed, raw, state.method,
                                           resources.rules)]}
