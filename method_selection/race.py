"""The stop rules of a validation, and how a step picks from its candidates' records.

Every method of a step is scored on the same dev items in one order. `bar` holds the
incumbent's outcome on each of them (True = failed), a candidate's outcomes arrive one item at
a time, and after each item its `Validation` says whether it may stop, and why:

- full (the paper's rule): never before the last item.
- exact: "cannot_win" once its failures reach the incumbent's total minus (min_improvement - 1).
  It could then never fail min_improvement fewer items than the incumbent, so stopping changes
  no decision, only the calls spent.
- race, in rounds of successive halving (`race_rounds`). The heat: every candidate is scored on
  the first 2/3 * pool / m items. After each round the better half of the undecided (by failures on
  the same items) goes on with twice the items, and the last one to the end of the pool.
  In every round the paired test of `evidence` decides: "better" once the alpha-spending sign test
  rejects "not better" at 1 - confidence; "worse" once the evidence that its win share is
  below 1/2 reaches 1/(1 - confidence). A candidate undecided at the end of its round stops
  there ("heat", "complete"), and one that no continuation could show better stops
  ("cannot_win"). Only "better" is adopted. Each candidate's test errs at most 1 - confidence
  of the time however often it is looked at; stopping a candidate early, for any reason, only
  lowers that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from method_selection.evidence import SpendingSignTest, can_still_reject, evidence_not_better, threshold

SMALLEST_HEAT_POOL = 50
"""Below this pool a first round would be a handful of items, too few to rank anything: every candidate
races the whole pool."""


HEAT_PASSES = 2 / 3
"""The heat of m candidates costs this many full passes over the pool; so does each later round, about.
Chosen on the selection bench (bench/selection.py): a whole pass per round kept better methods at every
m, but two thirds of one bought nearly as much for less, and more candidates spend the rest better."""


def race_rounds(pool: int, candidates: int) -> list[tuple[int, int]]:
    """A race's rounds (successive halving): (the items a round ends at, the candidates that go on after it).

    The first round (the heat) gives every candidate 2/3 * pool / m items; each later one doubles
    the items and halves the candidates, and the last candidate goes on to the end of the pool,
    where the test has the most to go on. 200 items, m = 10: 13 each, 5 on to 26, 2 to 52, 1 to 200.
    """
    if pool < SMALLEST_HEAT_POOL or candidates <= 1:
        return [(pool, 0)]
    rounds, alive, limit = [], candidates, max(1, int(HEAT_PASSES * pool / candidates))
    while alive > 1 and limit < pool:
        alive //= 2
        rounds.append((limit, alive))
        limit *= 2
    return rounds + [(pool, 0)]


def selection_for(selection: str, pool: int) -> str:
    """The rule a run uses: "auto" races a pool of SMALLEST_HEAT_POOL items or more, and below that takes the
    paper's decision (exact), since a few items can show nothing at a useful confidence."""
    if selection != "auto":
        return selection
    return "race" if pool >= SMALLEST_HEAT_POOL else "exact"


def heat_size(pool: int, candidates: int) -> int:
    """The items every candidate of a race is scored on before the best go on."""
    return race_rounds(pool, candidates)[0][0]


@dataclass(frozen=True)
class RaceRule:
    """How one step validates its candidates."""

    selection: str = "race"
    confidence: float = 0.9
    min_improvement: int = 1


def paired_record(bar: list[bool], outcomes: list[bool]) -> tuple[int, int]:
    """(wins, losses) of the candidate over the items scored so far: the discordant ones."""
    wins = sum(1 for incumbent, candidate in zip(bar, outcomes) if incumbent and not candidate)
    losses = sum(1 for incumbent, candidate in zip(bar, outcomes) if candidate and not incumbent)
    return wins, losses


class Validation:
    """One candidate's stop rule, fed its outcomes in the step's order; `limit` ends its round."""

    def __init__(self, rule: RaceRule, bar: list[bool], limit: int | None = None):
        self.rule, self.bar = rule, bar
        self.limit = len(bar) if limit is None else min(limit, len(bar))
        self.outcomes: list[bool] = []
        self.test = SpendingSignTest(1 - rule.confidence, len(bar))
        self.failures, self.incumbent_failures_left = 0, sum(bar)
        self.failures_that_cannot_win = sum(bar) - rule.min_improvement + 1
        self.verdict: str | None = None if self.limit else "complete"
        if self.verdict is None and rule.selection != "full" and sum(bar) < rule.min_improvement:
            self.verdict = "cannot_win"  # an incumbent that fails (almost) nothing cannot be beaten: spend no item

    def add(self, failed: bool) -> str | None:
        """The verdict after one more item, or None to go on."""
        incumbent = self.bar[len(self.outcomes)]
        self.outcomes.append(failed)
        self.failures += failed
        self.incumbent_failures_left -= incumbent
        test = self.test
        better = test.add(incumbent, failed)
        wins, losses = test.wins, test.discordant - test.wins
        n, rule = len(self.outcomes), self.rule
        if rule.selection == "exact" and self.failures >= self.failures_that_cannot_win:
            self.verdict = "cannot_win"
        elif rule.selection == "race" and better:
            self.verdict = "better"
        elif rule.selection == "race" and evidence_not_better(wins, losses) >= threshold(rule.confidence):
            self.verdict = "worse"
        elif rule.selection == "race" and not can_still_reject(test.alpha, wins, test.discordant,
                                                               self.incumbent_failures_left):
            self.verdict = "cannot_win"
        elif n >= len(self.bar):
            self.verdict = "complete"
        elif n >= self.limit:
            self.verdict = "heat"
        return self.verdict

    def feed(self, outcomes: list[bool]) -> str | None:
        """The verdict after `outcomes`, a longer prefix of the same sequence than it was fed before."""
        for failed in outcomes[len(self.outcomes):]:
            if self.verdict is not None:
                break
            self.add(failed)
        return self.verdict


def stop_rule(rule: RaceRule, bar: list[bool], limit: int | None = None,
              earlier: list[bool] = ()) -> Callable[[list[bool]], str | None]:
    """A stop function over growing prefixes of the outcomes after `earlier` (a round already scored)."""
    validation = Validation(rule, bar, limit)
    validation.feed(list(earlier))
    return lambda outcomes: validation.feed(list(earlier) + list(outcomes))


def stop_verdict(rule: RaceRule, bar: list[bool], outcomes: list[bool], limit: int | None = None) -> str | None:
    """Why the candidate stops after `outcomes`, or None to go on: the pure form of `Validation`."""
    return Validation(rule, bar, limit).feed(outcomes)


def race_order(case_ids: list[int], selected_on: list[int] | None) -> list[int]:
    """The dev order for a race step: the items that did not select the incumbent first, those that did last.

    The incumbent was adopted because it did well on the items it was raced on; comparing the
    next candidates there first would hold them to its luck (the winner's curse).
    """
    chosen = set(selected_on or ())
    return [i for i in case_ids if i not in chosen] + [i for i in case_ids if i in chosen]


def failure_shares(methods: Iterable[dict[int, bool]]) -> dict[int, float]:
    """Per item, the share of the methods scored on it that failed it; each method as {item: failed}."""
    tally: dict[int, list[int]] = {}
    for outcomes in methods:
        for item, failed in outcomes.items():
            counts = tally.setdefault(item, [0, 0])
            counts[0] += failed
            counts[1] += 1
    return {item: fails / seen for item, (fails, seen) in tally.items()}


def hardest_first(case_ids: list[int], failed: dict[int, bool], failure_share: dict[int, float]) -> list[int]:
    """exact's order: the items most often failed by every method scored so far first; then those the
    incumbent failed; then the seeded dev order.

    A candidate tends to fail what other revisions of the same method failed, so it reaches the
    count it cannot beat sooner. Exact pruning gives the same decision in any order fixed before
    the candidates answer. Never for a race: there the first discordant items would all be wins.
    """
    rank = {case_id: n for n, case_id in enumerate(case_ids)}
    return sorted(case_ids, key=lambda i: (-failure_share.get(i, 0.0), not failed[i], rank[i]))


@dataclass(frozen=True)
class RaceResult:
    """One candidate's validation as the selector sees it."""

    method_id: str
    failures: int
    items: int
    wins: int
    losses: int
    verdict: str

    @property
    def lead(self) -> float:
        """Wins minus losses per item scored: how far ahead of the incumbent it looks."""
        return (self.wins - self.losses) / max(1, self.items)


def race_result(method_id: str, rule: RaceRule, bar: list[bool], outcomes: list[bool], limit: int | None = None) -> RaceResult:
    wins, losses = paired_record(bar, outcomes)
    verdict = stop_verdict(rule, bar, outcomes, limit) or "complete"
    return RaceResult(method_id, sum(outcomes), len(outcomes), wins, losses, verdict)


def go_on(results: list[RaceResult], keep: int) -> list[RaceResult]:
    """The `keep` candidates undecided at the end of a round that failed fewest of its items (ties: the first sample)."""
    undecided = [r for r in results if r.verdict == "heat"]
    return sorted(undecided, key=lambda r: r.failures)[:keep]


def adoptable(rule: RaceRule, incumbent_failures: int, result: RaceResult) -> bool:
    """Whether this candidate has earned the incumbent's place."""
    if rule.selection == "race":
        return result.verdict == "better"
    return result.verdict == "complete" and incumbent_failures - result.failures >= rule.min_improvement


def choose(rule: RaceRule, incumbent_failures: int, results: list[RaceResult]) -> RaceResult | None:
    """The candidate to adopt, or None to keep the incumbent.

    full and exact: the fewest failures over the whole dev set (ties: the first sample).
    race: among those shown better, the largest lead per item raced.
    """
    winners = [r for r in results if adoptable(rule, incumbent_failures, r)]
    if rule.selection == "race":
        return max(winners, key=lambda r: r.lead, default=None)
    return min(winners, key=lambda r: r.failures, default=None)


def next_parent(results: list[RaceResult]) -> RaceResult | None:
    """A race that adopted nothing: the candidate the next step revises, or None to revise the same method again.

    The one with the most net wins over the incumbent (wins - losses), if any is ahead at all and
    was not shown worse. A count, not a rate: a lead of 4 on a 12-item heat is mostly luck, one of
    15 on the whole pool much less so, and the candidates that went on through the rounds are the
    ones that have the items. Gains too small to show in one step add up over a few: the
    revisions of the one ahead are raced against the incumbent too, and the first shown better is
    adopted. Nothing is adopted on looks alone.
    """
    ahead = [r for r in results if r.verdict != "worse" and r.wins > r.losses]
    return max(ahead, key=lambda r: r.wins - r.losses, default=None)


def simulate(rule: RaceRule, bar: list[bool], outcome_of: Callable[[int], bool], limit: int | None = None,
             earlier: list[bool] = ()) -> list[bool]:
    """A candidate's outcomes item by item (in `bar`'s order) until its round stops it; for the bench and the plan."""
    outcomes, stop = list(earlier), stop_rule(rule, bar, limit, earlier)
    while stop(outcomes[len(earlier):]) is None:
        outcomes.append(outcome_of(len(outcomes)))
    return outcomes


def simulate_step(rule: RaceRule, bar: list[bool], outcome_of: Callable[[int, int], bool],
                  candidates: int) -> list[tuple[RaceResult, list[bool]]]:
    """Every candidate's record and outcomes after one step, as the workflow validates them (the heat in
    the branches, later rounds in `later_rounds`); outcome_of(candidate, item). A record's method_id is its index."""
    rounds = race_rounds(len(bar), candidates) if rule.selection == "race" else [(len(bar), 0)]
    outcomes: list[list[bool]] = [[] for _ in range(candidates)]
    records: dict[int, RaceResult] = {}
    alive = list(range(candidates))
    for limit, keep in rounds:
        for c in alive:
            outcomes[c] = simulate(rule, bar, lambda k, c=c: outcome_of(c, k), limit, outcomes[c])
            records[c] = race_result(str(c), rule, bar, outcomes[c], limit)
        alive = [int(r.method_id) for r in go_on([records[c] for c in alive], keep)]
    return [(records[c], outcomes[c]) for c in range(candidates)]
