"""The four LLM tasks, each kept as template (a file in prompts/), input formatting
and output parsing, so prompts change without code and parsing is testable alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from configuration import ParseMode
from failure_rules import Failure, FailureRules
from llm_access import ChatLLM, LLMCallFailed
from parsing import ParsedText, parse_evolved_instruction, parse_optimized_method

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of prompts/<name>.txt."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8")


def fill(name: str, **values: str) -> str:
    """Fill named placeholders in one pass, so braces inside values stay untouched."""
    text = template(name)
    missing = set(_PLACEHOLDER.findall(text)) - values.keys()
    if missing:
        raise KeyError(f"prompts/{name}.txt needs {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def initial_method() -> str:
    """e0, the universal evolving method every run starts from."""
    return template("initial_method").strip()


def format_trajectories(trajectories: list[dict]) -> str:
    """Every case under its id, each stage numbered, for the analyzer."""
    blocks = []
    for trajectory in trajectories:
        stages = "\n".join(f"Stage {i}: {text}" for i, text in enumerate(trajectory["stages"]))
        note = f"\n(Stage {len(trajectory['stages'])} could not be produced: {trajectory['failure']})" if trajectory.get("failure") else ""
        blocks.append(f"### Case {trajectory['case_id']}\n{stages}{note}")
    return "\n\n".join(blocks)


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
    return EvolutionOutcome(None if failure else parsed.text, failure, answer.text, parsed.lenient, parsed.text)


@dataclass(frozen=True)
class ResponseOutcome:
    """The evol LLM's answer to an instruction, or why it counts as a failure (F)."""

    text: str | None
    failure: Failure | None
    raw: str


async def respond(llm: ChatLLM, instruction: str, rules: FailureRules) -> ResponseOutcome:
    """Answer an instruction and apply the failure function F to the answer."""
    try:
        answer = await llm.complete(fill("respond", instruction=instruction), role="respond")
    except LLMCallFailed as exc:
        return ResponseOutcome(None, Failure(exc.reason, exc.detail), "")
    failure = rules.check_response(answer.text)
    return ResponseOutcome(None if failure else answer.text, failure, answer.text)


async def analyze(llm: ChatLLM, method: str, trajectories: list[dict], sample_index: int) -> str:
    """Feedback on the trajectories, naming failed cases by id (raises LLMCallFailed)."""
    prompt = fill("analyze", method=method, trajectories=format_trajectories(trajectories))
    return (await llm.complete(prompt, role="analyze", sample_index=sample_index)).text


async def optimize(llm: ChatLLM, method: str, feedback: str, sample_index: int) -> tuple[ParsedText, str]:
    """A rewritten method parsed from the optimizer's answer, and the raw answer."""
    mode: ParseMode = llm.config.parse_mode
    answer = await llm.complete(
        fill("optimize", method=method, feedback=feedback), role="optimize", sample_index=sample_index,
        accept=lambda text: parse_optimized_method(text, mode).text is not None,
    )
    return parse_optimized_method(answer.text, mode), answer.text


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
    failure = rules.check_evolution(inspiration["instruction"], parsed)
    item.update(instruction=parsed.text, original=parsed.text, raw=answer.text, lenient=parsed.lenient)
    if failure:
        item["elimination"] = {"reason": failure.reason, "detail": failure.detail}
    return item


async def judge_information_gain(llm: ChatLLM, parent: str, evolved: str) -> bool:
    """The LLM's yes/no: does `evolved` ask for anything `parent` does not? A failed call says yes."""
    try:
        answer = await llm.complete(fill("equality", parent=parent, evolved=evolved), role="equality")
    except LLMCallFailed:
        return True  # the judge is optional; it must not eliminate on its own failure
    first_word = re.sub(r"[^a-z가-힣]", " ", answer.text.lower()).split()[:1]
    return first_word not in (["no"], ["아니요"], ["아니오"], ["아니"])
