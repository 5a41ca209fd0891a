"""Evolution tasks: rewrite an instruction with a method (in depth), or write a new one (in breadth).

Each task keeps its template (prompts/), its input formatting and its output parsing
(failure_checks.markers) apart, so parsing is tested without an LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

from failure_checks.markers import ParsedText, ParseMode, parse_evolved_instruction
from failure_checks.rules import Failure, FailureRules
from llm_access.client import ChatLLM, LLMCallFailed
from llm_tasks.templates import fill


@dataclass(frozen=True)
class EvolutionOutcome:
    """One instruction evolved once: the new text, or why it failed."""

    text: str | None
    """The evolved instruction when it passed every rule."""
    failure: Failure | None
    raw: str
    lenient: bool = False
    """Parsed without the final marker."""
    candidate_text: str | None = None
    """What was parsed, even when a rule rejected it (the analyzer learns from it)."""


async def evolve(llm: ChatLLM, method: str, instruction: str, rules: FailureRules, sample_index: int = 0) -> EvolutionOutcome:
    """Apply a method to one instruction and check the result against the evolution rules."""
    mode: ParseMode = llm.config.parse_mode
    try:
        answer = await llm.complete(
            fill("evolve", method=method, instruction=instruction), role="evolve", sample_index=sample_index,
            accept=lambda text: parse_evolved_instruction(text, mode).text is not None,
        )
    except LLMCallFailed as exc:
        return EvolutionOutcome(None, Failure(exc.reason, exc.detail), "")
    parsed: ParsedText = parse_evolved_instruction(answer.text, mode)
    failure = rules.check_evolution(instruction, parsed)
    lenient = parsed.lenient or answer.finish_reason == "length"  # a cut answer only a lenient config takes
    return EvolutionOutcome(None if failure else parsed.text, failure, answer.text, lenient, parsed.text)

async def create_in_breadth(llm: ChatLLM, inspiration: dict, rules: FailureRules, level: int) -> dict:
    """A new lineage: an instruction in the same domain as `inspiration`, rarer, of similar difficulty.

    It passes the evolution rules against its inspiration (a paraphrase is `unchanged`);
    a failure comes back marked with `elimination`, to be recorded like any other.
    """
    new_id = f"{inspiration['id']}.B"
    item = {"id": new_id, "root_id": new_id, "parent_id": inspiration["id"], "level": level,
            "original": None, "lineage": "breadth", "parent_instruction": inspiration["instruction"]}
    mode: ParseMode = llm.config.parse_mode
    try:
        answer = await llm.complete(fill("breadth", instruction=inspiration["instruction"]), role="breadth",
                                    accept=lambda text: parse_evolved_instruction(text, mode).text is not None)
    except LLMCallFailed as exc:
        return {**item, "instruction": None, "raw": "", "elimination": {"reason": exc.reason, "detail": exc.detail}}
    parsed = parse_evolved_instruction(answer.text, mode)
    failure = rules.check_evolution(inspiration["instruction"], parsed, new_lineage=True)
    item.update(instruction=parsed.text, original=parsed.text, raw=answer.text,
                lenient=parsed.lenient or answer.finish_reason == "length")
    if failure:
        item["elimination"] = {"reason": failure.reason, "detail": failure.detail}
    return item

