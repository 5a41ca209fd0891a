"""A deterministic fake chat model for unit tests.

langchain-core's fakes pop answers from a shared list, so under parallel `Send`
branches which branch gets which answer depends on scheduling. This one answers
from the prompt's content (and the sampling seed), so every branch gets the same
answer on every run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

Responder = Callable[[str, int | None], str]


def _has_hangul(text: str) -> bool:
    return bool(re.search(r"[\uac00-\ud7a3]", text))


def instruction_of(prompt: str) -> str:
    """The instruction at the end of an evolve prompt."""
    return prompt.rsplit("#Instruction#\n", 1)[1].strip()


def method_of(prompt: str) -> str:
    """The method an evolve prompt applies (everything before the instruction block)."""
    return prompt.rsplit("#Instruction#\n", 1)[0].strip()


def task_of(prompt: str) -> str:
    """Which of the four tasks a prompt belongs to."""
    if "```Optimized Method" in prompt and "<feedback>" in prompt:
        return "optimize"
    if "### Case " in prompt and "<method>" in prompt:
        return "analyze"
    if "#Instruction#\n" in prompt:
        return "evolve"
    if "#Given Instruction#" in prompt:
        return "breadth"
    if prompt.startswith("Compare two versions of an instruction"):
        return "equality"
    return "respond"


def good_evolution(instruction: str) -> str:
    extra = " 단계별로 이유를 설명하고 구체적인 예를 하나 드세요." if _has_hangul(instruction) else \
        " Explain your reasoning step by step and give one concrete example."
    return f"#Methods List#\n- add reasoning\n#Plan#\nadd a step\n#Rewritten Instruction#\n{instruction}{extra}\n" \
           f"#Finally Rewritten Instruction#\n{instruction}{extra}"


def default_responder(prompt: str, seed: int | None) -> str:
    """A well-behaved world: evolutions succeed, answers are plain, each optimizer sample differs."""
    task = task_of(prompt)
    if task == "evolve":
        return good_evolution(instruction_of(prompt))
    if task == "analyze":
        cases = re.findall(r"### Case (\d+)", prompt)
        return "\n".join(f"Case {c}: evolved fine." for c in cases) + "\nSummary: no systematic weakness."
    if task == "optimize":
        method = prompt.split("<method>\n", 1)[1].split("\n</method>", 1)[0]
        return (f"I tightened the rules.\n```Optimized Method\n{method}\n"
                f"Variant {seed}: keep every number and every name that the instruction gives.\n```")
    if task == "breadth":
        given = prompt.split("#Given Instruction#\n", 1)[1].split("\n\nWrite only", 1)[0]
        topic = "희귀한 전통 발효 음식의 역사를 설명하세요." if _has_hangul(given) else \
            f"Describe an unusual, little-known variant of this theme ({len(given)}): lichens on city walls."
        return f"#Final Instruction#\n{topic}"
    if task == "equality":
        return "yes"
    answer = "이것은 자세한 답변입니다. 먼저 배경을 설명하고 예를 듭니다." if _has_hangul(prompt) else \
        "This is a detailed answer. First the background, then an example."
    return answer


class ScriptedChatModel(BaseChatModel):
    """Answers `responder(prompt, seed)`; records every prompt it saw."""

    responder: Responder = default_responder
    calls: list = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []
        self._lock = threading.Lock()

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        prompt = "\n".join(str(m.content) for m in messages)
        seed = kwargs.get("seed")
        with self._lock:
            self.calls.append({"prompt": prompt, "seed": seed, "task": task_of(prompt)})
        text = self.responder(prompt, seed)
        usage = {"input_tokens": len(prompt) // 4, "output_tokens": len(text) // 4,
                 "total_tokens": len(prompt) // 4 + len(text) // 4}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))])

    def tasks(self) -> list[str]:
        return [c["task"] for c in self.calls]
