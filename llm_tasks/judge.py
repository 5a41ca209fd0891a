"""The optional failure judge: one short structured question to an LLM per evolution and per answer.

Rules run first; the judge decides only what they passed. Its verdict is one of the corpus classes
(tests/data/failure_corpus/README.md). A failed call or an answer without a known verdict counts as
"ok": the judge is optional and must not eliminate an item on its own failure.
"""

from __future__ import annotations

import re

from failure_checks.rules import Failure
from llm_access.client import ChatLLM, LLMCallFailed
from llm_tasks.templates import fill

RESPONSE_VERDICTS = ("ok", "asks_back", "asks_for_input", "refuses", "claims_impossible", "off_topic")
EVOLUTION_VERDICTS = ("ok", "answered_instead", "unanswerable", "contradictory", "answer_leaked", "lost_content",
                      "irrelevant_addition", "copied")
JUDGE_MODES = ("off", "dev", "all")


def parse_verdict(text: str, verdicts: tuple[str, ...]) -> str | None:
    """The verdict after "VERDICT:" (else the first known verdict word), or None."""
    marked = re.search(r"verdict\s*[:：]\s*\**\s*([a-z_]+)", text, re.IGNORECASE)
    if marked and marked.group(1).lower() in verdicts:
        return marked.group(1).lower()
    words = re.findall(r"[a-z_]+", text.lower())
    return next((word for word in words if word in verdicts), None)


async def _verdict(llm: ChatLLM, prompt: str, verdicts: tuple[str, ...]) -> Failure | None:
    try:
        answer = await llm.complete(prompt, role="judge")
    except LLMCallFailed:
        return None
    verdict = parse_verdict(answer.text, verdicts)
    return None if verdict in (None, "ok") else Failure(verdict, "judge")


async def judge_response(llm: ChatLLM, instruction: str, response: str) -> Failure | None:
    """The judge's failure class for an answer the rules passed, or None."""
    return await _verdict(llm, fill("judge_response", instruction=instruction, response=response), RESPONSE_VERDICTS)


async def judge_evolution(llm: ChatLLM, original: str, evolved: str) -> Failure | None:
    """The judge's failure class for an evolution the rules passed, or None."""
    return await _verdict(llm, fill("judge_evolution", original=original, evolved=evolved), EVOLUTION_VERDICTS)
