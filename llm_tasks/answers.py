"""Answering tasks: respond to an evolved instruction (judged by F), and the optional equality judge."""

from __future__ import annotations

import re
from dataclasses import dataclass

from failure_checks.rules import Failure, FailureRules
from llm_access.client import ChatLLM, LLMCallFailed
from llm_tasks.templates import fill


@dataclass(frozen=True)
class ResponseOutcome:
    """The evol LLM's answer to an instruction, or why it counts as a failure (F)."""

    text: str | None
    failure: Failure | None
    raw: str
    reasoning: str = ""
    """The model's reasoning, kept apart from the answer (never judged by F, never in `raw`)."""

    def judged(self, verdict: Failure | None) -> "ResponseOutcome":
        """This outcome with the judge's failure, if it found one."""
        return self if verdict is None else ResponseOutcome(None, verdict, self.raw)


async def respond(llm: ChatLLM, instruction: str, rules: FailureRules) -> ResponseOutcome:
    """Answer an instruction and apply the failure function F to the answer."""
    try:
        answer = await llm.complete(fill("respond", instruction=instruction), role="respond")
    except LLMCallFailed as exc:
        return ResponseOutcome(None, Failure(exc.reason, exc.detail), "")
    failure = rules.check_response(answer.text, instruction)
    return ResponseOutcome(None if failure else answer.text, failure, answer.text, answer.reasoning)

async def judge_information_gain(llm: ChatLLM, parent: str, evolved: str) -> bool:
    """The LLM's yes/no: does `evolved` ask for anything `parent` does not? A failed call says yes."""
    try:
        answer = await llm.complete(fill("equality", parent=parent, evolved=evolved), role="equality")
    except LLMCallFailed:
        return True  # the judge is optional; it must not eliminate on its own failure
    first_word = re.sub(r"[^a-z가-힣]", " ", answer.text.lower()).split()[:1]
    return first_word not in (["no"], ["아니요"], ["아니오"], ["아니"])
