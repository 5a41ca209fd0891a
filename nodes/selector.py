"""Selector: keeps the incumbent unless a candidate is strictly better, and decides whether to stop."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from resources import emit, resources_from, timed
from state import MethodScore, StepRecord, WorkflowState


def failed_items(score: MethodScore) -> int:
    """How many dev items the method failed on."""
    return round(score["failure_rate"] * score["dev_size"])


def is_strictly_better(candidate: MethodScore, incumbent: MethodScore, min_improvement: int = 1) -> bool:
    """The candidate fails on at least `min_improvement` fewer dev items than the incumbent.

    An equal count never replaces the incumbent, whatever the complexity gain: a longer
    rewrite that fails as often is no evidence of a better method.
    """
    return failed_items(incumbent) - failed_items(candidate) >= min_improvement


def within_noise(candidate: MethodScore, incumbent: MethodScore) -> bool:
    """The candidate's failure rate lies inside the incumbent's 95% (Wilson) interval for this dev size."""
    low, high = incumbent.get("failure_rate_interval") or (0.0, 1.0)
    return low <= candidate["failure_rate"] <= high


def noise_note(candidate: MethodScore, incumbent: MethodScore) -> str:
    """A clause saying that a win is within noise, or '' when it is not."""
    if not within_noise(candidate, incumbent):
        return ""
    low, high = incumbent.get("failure_rate_interval") or (0.0, 1.0)
    return (f"; within noise for a dev set of {incumbent['dev_size']}: {candidate['failure_rate']:.3f} is inside "
            f"{incumbent['method_id']}'s 95% interval [{low:.3f}, {high:.3f}]")


def best_candidate(scores: list[MethodScore]) -> MethodScore | None:
    """The lowest failure rate, ties broken by the larger complexity gain."""
    return min(scores, key=lambda s: (s["failure_rate"], -s["complexity_gain"]), default=None)


def _decision(best: MethodScore | None, incumbent: MethodScore, min_improvement: int) -> tuple[bool, str]:
    if best is None:
        return False, f"no candidate could be validated; kept {incumbent['method_id']}"
    if is_strictly_better(best, incumbent, min_improvement):
        return True, (f"{best['method_id']} failure rate {best['failure_rate']:.3f} beats "
                      f"{incumbent['method_id']} {incumbent['failure_rate']:.3f}" + noise_note(best, incumbent))
    needed = f" by {min_improvement} dev items (--min-improvement)" if min_improvement > 1 else ""
    return False, (f"best candidate {best['method_id']} ({best['failure_rate']:.3f}, gain {best['complexity_gain']:.2f}) "
                   f"is not strictly better{needed} than {incumbent['method_id']} ({incumbent['failure_rate']:.3f}, "
                   f"gain {incumbent['complexity_gain']:.2f})")


def stop_reason(step: int, stale_steps: int, max_steps: int, patience: int) -> str:
    """Why optimization stops after this step, or '' to go on."""
    if step >= max_steps:
        return f"reached max_steps ({max_steps})"
    if stale_steps >= patience:
        return f"no improvement in {stale_steps} steps (patience {patience})"
    return ""


@timed("optimization")
async def selector(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads this step's candidates and scores; writes the kept method, the step's history and clears the step."""
    settings = resources_from(config).settings
    scores = {s["method_id"]: s for s in state.scores}
    incumbent = state.method_score or scores[state.method_id]
    candidate_scores = [s for method_id, s in scores.items() if method_id != state.method_id]
    best = best_candidate(candidate_scores)
    adopt, decision = _decision(best, incumbent, settings.min_improvement)
    kept = scores[best["method_id"]] if adopt else incumbent
    methods = {c["method_id"]: c["text"] for c in state.candidates}
    step = state.step + 1
    stale = 0 if adopt else state.stale_steps + 1
    record = StepRecord(
        step=step, batch_row_ids=[c["row_id"] for c in state.batch], trajectories=state.trajectories,
        feedback=state.feedback,
        candidates=[{**c, "score": scores.get(c["method_id"])} for c in state.candidates],
        incumbent={"method_id": incumbent["method_id"], "score": incumbent},
        kept_method_id=kept["method_id"], decision=decision,
    )
    update = {
        "step": step, "stale_steps": stale, "history": state.history + [record],
        "method_score": kept, "feedback": None, "candidates": None, "scores": None,
        "stop_reason": stop_reason(step, stale, settings.max_steps, settings.patience),
    }
    if state.e0_score is None and state.method_id == "e0":
        update["e0_score"] = incumbent
    if adopt:
        update.update(method=methods[kept["method_id"]], method_id=kept["method_id"])
    emit({"event": "step", "step": step, "kept": kept["method_id"], "failure_rate": kept["failure_rate"]})
    return update
