"""Method optimization tasks: analyse trajectories into feedback, rewrite the method from it."""

from __future__ import annotations

from failure_checks.markers import ParsedText, ParseMode, parse_optimized_method
from llm_access.client import ChatLLM
from llm_tasks.templates import fill


def failure_note(trajectory: dict) -> str:
    """Which stage failed and why: a rule-rejected stage is shown, and named as the one that failed."""
    if not trajectory.get("failure"):
        return ""
    stage = trajectory.get("failed_stage")
    stage = len(trajectory["stages"]) if stage is None else stage
    if stage < len(trajectory["stages"]):
        return f"\n(Stage {stage} was produced but rejected: {trajectory['failure']})"
    return f"\n(Stage {stage} could not be produced: {trajectory['failure']})"


def format_trajectories(trajectories: list[dict]) -> str:
    """Every case under its id, each stage numbered, for the analyzer."""
    blocks = []
    for trajectory in trajectories:
        stages = "\n".join(f"Stage {i}: {text}" for i, text in enumerate(trajectory["stages"]))
        blocks.append(f"### Case {trajectory['case_id']}\n{stages}{failure_note(trajectory)}")
    return "\n\n".join(blocks)

def format_dev_failures(failures: dict[str, int]) -> str:
    """The incumbent's dev failures by class, for the analyzer; a note when it has no score yet."""
    if not failures:
        return "(no dev score yet for this method)"
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(failures.items(), key=lambda kv: -kv[1]))


async def analyze(llm: ChatLLM, method: str, trajectories: list[dict], sample_index: int,
                  dev_failures: dict[str, int] | None = None) -> str:
    """Feedback on the trajectories, naming failed cases by id (raises LLMCallFailed)."""
    prompt = fill("analyze", method=method, trajectories=format_trajectories(trajectories),
                  dev_failures=format_dev_failures(dev_failures or {}))
    return (await llm.complete(prompt, role="analyze", sample_index=sample_index)).text


async def optimize(llm: ChatLLM, method: str, feedback: str, sample_index: int) -> tuple[ParsedText, str]:
    """A rewritten method parsed from the optimizer's answer, and the raw answer."""
    mode: ParseMode = llm.config.parse_mode
    answer = await llm.complete(
        fill("optimize", method=method, feedback=feedback), role="optimize", sample_index=sample_index,
        accept=lambda text: parse_optimized_method(text, mode).text is not None,
    )
    parsed = parse_optimized_method(answer.text, mode)
    if answer.finish_reason == "length":  # only a lenient config gets a cut answer back: it is a lenient parse
        parsed = ParsedText(parsed.text, lenient=True)
    return parsed, answer.text

