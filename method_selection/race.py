"""The stop rules of a validation: when a candidate has been scored on enough dev items.

Every method is scored on the same dev items in one order (`race_order`). `bar` holds the
incumbent's outcome on each of them (True = failed), `outcomes` the candidate's on the first n.
After each item `stop_verdict` says whether the candidate may stop, and why:

- full (the paper's rule): never before the last item.
- exact: "cannot_win" once the candidate's failures reach the incumbent's total minus
  (min_improvement - 1). It could then never fail min_improvement fewer items than the
  incumbent, so stopping changes no decision, only the calls spent.
- race: the paired test of `evidence`: "better" once the evidence for a higher win share
  reaches m/(1-confidence) for the step's m candidates; "worse" once the evidence that its win
  share is below 1/2 reaches 1/(1-confidence); "cannot_win" once even winning every remaining
  item the incumbent failed could not make it "better". Only "better" can be adopted, so a step
  adopts a method that is not better with probability at most 1 - confidence however many items
  were looked at (Ville's inequality per candidate, Bonferroni over the m of them); the drop
  rules only decide how soon a candidate stops costing calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from method_selection.evidence import evidence_better, evidence_not_better, threshold

SELECTIONS = ("race", "exact", "full")

@dataclass(frozen=True)
class RaceRule:
    """How one step validates its candidates."""

    selection: str = "race"
    confidence: float = 0.9
    min_improvement: int = 1
    candidates: int = 1
    """Candidates of the step: each is tested at (1 - confidence) / candidates, so that the step as a
    whole adopts a method that is not better with probability at most 1 - confidence (Bonferroni)."""

    def adoption_threshold(self) -> float:
        return threshold(self.confidence) * self.candidates


def paired_record(bar: list[bool], outcomes: list[bool]) -> tuple[int, int]:
    """(wins, losses) of the candidate over the items scored so far: the discordant ones."""
    wins = sum(1 for incumbent, candidate in zip(bar, outcomes) if incumbent and not candidate)
    losses = sum(1 for incumbent, candidate in zip(bar, outcomes) if candidate and not incumbent)
    return wins, losses


def stop_verdict(rule: RaceRule, bar: list[bool], outcomes: list[bool]) -> str | None:
    """Why the candidate may stop after len(outcomes) items, or None to go on ("complete" at the end)."""
    n = len(outcomes)
    if rule.selection == "exact" and sum(outcomes) >= sum(bar) - rule.min_improvement + 1:
        return "cannot_win"
    if rule.selection == "race":
        wins, losses = paired_record(bar, outcomes)
        needed = rule.adoption_threshold()
        if evidence_better(wins, losses) >= needed:
            return "better"
        if evidence_not_better(wins, losses) >= threshold(rule.confidence):
            return "worse"
        if evidence_better(wins + sum(bar[n:]), losses) < needed:
            return "cannot_win"
    return "complete" if n >= len(bar) else None


def race_order(case_ids: list[int], selected_on: list[int] | None) -> list[int]:
    """The dev order for a step: the items that did not select the incumbent first, those that did last.

    The incumbent was adopted because it did well on the items it was raced on; comparing the
    next candidates there first would hold them to its luck (the winner's curse).
    """
    chosen = set(selected_on or ())
    return [i for i in case_ids if i not in chosen] + [i for i in case_ids if i in chosen]


def failures_first(case_ids: list[int], failed: dict[int, bool]) -> list[int]:
    """exact's order: the items the incumbent failed first, each group in the seeded dev order.

    A candidate about as good as the incumbent tends to fail those too, so it reaches the count it
    cannot beat sooner; exact pruning gives the same decision in any order fixed before the
    candidates answer. Never for a race: there the first discordant items would all be wins.
    """
    return [i for i in case_ids if failed[i]] + [i for i in case_ids if not failed[i]]


@dataclass(frozen=True)
class RaceResult:
    """One candidate's validation as the selector sees it."""

    method_id: str
    failures: int
    items: int
    wins: int
    losses: int
    verdict: str


def race_result(method_id: str, rule: RaceRule, bar: list[bool], outcomes: list[bool]) -> RaceResult:
    wins, losses = paired_record(bar, outcomes)
    verdict = stop_verdict(rule, bar, outcomes) or "complete"
    return RaceResult(method_id, sum(outcomes), len(outcomes), wins, losses, verdict)


def adoptable(rule: RaceRule, incumbent_failures: int, result: RaceResult) -> bool:
    """Whether this candidate has earned the incumbent's place."""
    if rule.selection == "race":
        return result.verdict == "better"
    return result.verdict == "complete" and incumbent_failures - result.failures >= rule.min_improvement


def choose(rule: RaceRule, incumbent_failures: int, results: list[RaceResult]) -> RaceResult | None:
    """The candidate to adopt, or None to keep the incumbent.

    full and exact: the fewest failures over the whole dev set (ties: the first sample).
    race: among those shown better, the largest lead (wins - losses) per item raced.
    """
    winners = [r for r in results if adoptable(rule, incumbent_failures, r)]
    if rule.selection == "race":
        return max(winners, key=lambda r: (r.wins - r.losses) / max(1, r.items), default=None)
    return min(winners, key=lambda r: r.failures, default=None)


def simulate(rule: RaceRule, bar: list[bool], outcome_of: Callable[[int], bool]) -> list[bool]:
    """A candidate's outcomes item by item (in `bar`'s order) until the rule stops it; for the bench."""
    outcomes: list[bool] = []
    while stop_verdict(rule, bar, outcomes) is None:
        outcomes.append(outcome_of(len(outcomes)))
    return outcomes
