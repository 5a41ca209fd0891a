"""Selector: keeps the incumbent unless a candidate is strictly better, and decides whether to stop."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from resources import emit, resources_from, timed
from method_selection.race import RaceResult, RaceRule, choose, failure_shares, hardest_first, next_parent, race_order
from nodes.validator import failed, in_sample_order, race_record, race_rule
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


def dev_failure_shares(state: WorkflowState) -> dict[int, float]:
    """Per dev item, the share of the methods scored on it so far (e0, every candidate, the incumbent) that failed it."""
    scores = [state.e0_score, state.method_score] + [c.get("score") for step in state.history
                                                     for c in step["candidates"]]
    widest: dict[str, MethodScore] = {}
    for score in filter(None, scores):  # one method once: its score with the most items
        if len(score.get("examples") or []) > len((widest.get(score["method_id"]) or {}).get("examples") or []):
            widest[score["method_id"]] = score
    return failure_shares({e["case_id"]: failed(e) for e in score.get("examples") or []} for score in widest.values())


def step_order(state: WorkflowState, selection: str, failed_by_id: dict[int, bool]) -> list[int]:
    """The dev order of this step: seeded for full; the items failed most so far first for exact; for a
    race, the items that selected the incumbent last (method_selection.race)."""
    case_ids = [case["case_id"] for case in state.dev]
    if selection == "exact":
        return hardest_first(case_ids, failed_by_id, dev_failure_shares(state))
    if selection == "race":
        return race_order(case_ids, (state.method_score or {}).get("selected_on"))
    return case_ids


async def set_bar(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads the dev set and the incumbent's score; writes this step's dev order and the incumbent's outcomes in it."""
    outcome = {e["case_id"]: failed(e) for e in state.method_score["examples"]}
    order = step_order(state, race_rule(resources_from(config).settings).selection, outcome)
    return {"race_order": order, "bar": [outcome[case_id] for case_id in order]}


def stop_reason(step: int, stale_steps: int, max_steps: int, patience: int) -> str:
    """Why optimization stops after this step, or '' to go on."""
    if step >= max_steps:
        return f"reached max_steps ({max_steps})"
    if stale_steps >= patience:
        return f"no improvement in {stale_steps} steps (patience {patience})"
    return ""


def race_line(result: RaceResult) -> str:
    """s1c0 worse after 34 items (3 wins, 12 losses)."""
    if result.items == 0 and result.verdict == "cannot_win":
        return (f"{result.method_id} not scored: even winning every dev item the incumbent failed would not "
                "show it better (a larger --dev-size, or --selection full)")
    verdict = VERDICT_WORDS.get(result.verdict, result.verdict)
    return f"{result.method_id} {verdict} after {result.items} items ({result.wins} wins, {result.losses} losses)"


VERDICT_WORDS = {"heat": "out after its round", "complete": "undecided at the end of the pool", "cannot_win": "cannot win"}


def race_decision(rule: RaceRule, incumbent: MethodScore, results: list[RaceResult],
                  pool: int) -> tuple[RaceResult | None, str]:
    """The race's choice and why (issue 21): adopt only a candidate the paired test showed better."""
    chosen = choose(rule, failed_items(incumbent), results)
    if chosen is None:
        lines = "; ".join(map(race_line, results)) or "no candidate could be validated"
        return None, (f"no candidate shown better than {incumbent['method_id']} at confidence {rule.confidence}: "
                      f"{lines}; kept {incumbent['method_id']}")
    left = pool - chosen.items
    after = f"re-estimated on the other {left} dev items" if left else "no dev item is left to re-estimate it on"
    return chosen, (f"{chosen.method_id} is better than {incumbent['method_id']}: {chosen.wins} wins, {chosen.losses} "
                    f"losses over {chosen.items} paired dev items (the sign test rejected 'not better' at "
                    f"{1 - rule.confidence:.2g}, alpha spent over the pool of {pool}); failure rate "
                    f"{chosen.failures / max(1, chosen.items):.3f} on them; {after}")


def exact_decision(rule: RaceRule, incumbent: MethodScore, scores: list[MethodScore]) -> tuple[MethodScore | None, str]:
    """The paper's rule over the fully scored candidates; a pruned one could not have won (exact pruning)."""
    complete = [s for s in scores if race_record(s).verdict == "complete"]
    best = best_candidate(complete)
    if best is None and scores:
        return None, (f"every candidate stopped once its failures reached {incumbent['method_id']}'s "
                      f"{failed_items(incumbent)} (exact pruning); kept {incumbent['method_id']}")
    adopt, decision = _decision(best, incumbent, rule.min_improvement)
    return (best if adopt else None), decision


def validation_savings(scores: list[MethodScore], pool: int) -> dict[str, int]:
    """Candidate dev items scored this step, against the items a full evaluation would have scored."""
    return {"items_scored": sum(s["dev_size"] for s in scores), "items_full": pool * len(scores),
            "calls": sum(s.get("calls", 0) for s in scores)}


def selection_summary(history: list[StepRecord], selection: str) -> dict:
    """run.json's account of validation (issue 21): candidate dev items and calls against full evaluation."""
    figures = [step.get("validation") or {} for step in history]
    scored, full = sum(f.get("items_scored", 0) for f in figures), sum(f.get("items_full", 0) for f in figures)
    return {"selection": selection, "candidate_items_scored": scored, "candidate_items_full": full,
            "candidate_calls": sum(f.get("calls", 0) for f in figures),
            "saved_share": round(1 - scored / full, 4) if full else 0.0}


def savings_line(summary: dict) -> str:
    """validation (--selection race): 312 of 1000 candidate dev items scored, 69% fewer than full evaluation."""
    return (f"validation (--selection {summary['selection']}): {summary['candidate_items_scored']} of "
            f"{summary['candidate_items_full']} candidate dev items scored, {summary['saved_share']:.0%} fewer than "
            f"full evaluation ({summary['candidate_calls']} calls)")


def parent_update(state: WorkflowState, results: list[RaceResult], adopted: bool) -> dict:
    """The method the next step revises: the incumbent after an adoption; after a race that adopted
    nothing, the candidate furthest ahead of it, if one looks ahead (method_selection.race.next_parent)."""
    if adopted:
        return {"parent_method": "", "parent_id": "", "parent_score": None}
    ahead = next_parent(results)
    if ahead is None:
        return {}
    methods = {c["method_id"]: c["text"] for c in state.candidates}
    score = next(s for s in race_scores(state) if s["method_id"] == ahead.method_id)
    return {"parent_method": methods[ahead.method_id], "parent_id": ahead.method_id, "parent_score": score}


def race_scores(state: WorkflowState) -> list[MethodScore]:
    """This step's candidate scores; a race's candidates that went on past the heat over all their rounds."""
    raced = {s["method_id"]: s for s in state.raced}
    return [raced.get(s["method_id"], s) for s in in_sample_order(state.scores, state.candidates)
            if s["method_id"] != state.method_id]


@timed("optimization")
async def selector(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads this step's candidates and scores (over every round they raced) and the incumbent's; writes the kept
    method, the method the next step revises, the step's history, and clears the step."""
    settings = resources_from(config).settings
    rule = race_rule(settings)
    incumbent = state.method_score
    candidate_scores = race_scores(state)
    by_id = {s["method_id"]: s for s in candidate_scores}
    results = [race_record(s) for s in candidate_scores]
    if rule.selection == "race":
        chosen, decision = race_decision(rule, incumbent, results, len(state.dev))
        kept = {**by_id[chosen.method_id], "selected_on": state.race_order[:chosen.items]} if chosen else incumbent
    else:
        best, decision = exact_decision(rule, incumbent, candidate_scores)
        kept = best or incumbent
    adopt = kept is not incumbent
    parent = parent_update(state, results, adopt) if rule.selection == "race" else {}
    if parent.get("parent_id"):
        decision += (f"; the next step revises {parent['parent_id']}, which leads "
                     f"{state.method_id} by {by_id[parent['parent_id']]['race']['wins']} wins to "
                     f"{by_id[parent['parent_id']]['race']['losses']} losses so far")
    methods = {c["method_id"]: c["text"] for c in state.candidates}
    step = state.step + 1
    stale = 0 if adopt or parent.get("parent_id") else state.stale_steps + 1
    record = StepRecord(
        step=step, batch_row_ids=[c["row_id"] for c in state.batch], trajectories=state.trajectories,
        feedback=state.feedback,
        candidates=[{**c, "score": by_id.get(c["method_id"])} for c in sorted(state.candidates,
                                                                              key=lambda c: c["sample_index"])],
        incumbent={"method_id": incumbent["method_id"], "score": incumbent},
        kept_method_id=kept["method_id"], decision=decision, selection=rule.selection,
        validation=validation_savings(candidate_scores, len(state.dev)),
        revised=state.parent_id or state.method_id,
    )
    update = {
        "step": step, "stale_steps": stale, "history": state.history + [record], **parent,
        "method_score": kept, "feedback": None, "candidates": None, "scores": None, "raced": [],
        "stop_reason": stop_reason(step, stale, settings.max_steps, settings.patience),
    }
    if adopt:
        update.update(method=methods[kept["method_id"]], method_id=kept["method_id"])
    emit({"event": "step", "step": step, "kept": kept["method_id"], "failure_rate": kept["failure_rate"]})
    return update
