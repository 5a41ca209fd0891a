"""Issue 21: the paired sequential test is anytime-valid, and the stop rules behave as documented."""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

from method_selection.evidence import evidence_better, evidence_not_better, threshold
from method_selection.race import RaceRule, RaceResult, choose, race_order, stop_verdict


def closed_form_better(wins: int, losses: int) -> Fraction:
    """The uniform-(1/2, 1] mixture against p = 1/2, exactly: sum_{k<=w} C(n+1, k) / ((n+1) C(n, w))."""
    n = wins + losses
    return Fraction(sum(comb(n + 1, k) for k in range(wins + 1)), (n + 1) * comb(n, wins))


def test_the_evidence_is_the_exact_mixture_ratio():
    for wins, losses in [(0, 0), (1, 0), (3, 1), (5, 0), (12, 4), (40, 31), (7, 30), (150, 120)]:
        assert abs(evidence_better(wins, losses) / float(closed_form_better(wins, losses)) - 1) < 1e-9
        assert abs(evidence_not_better(losses, wins) - evidence_better(wins, losses)) < 1e-9 * evidence_better(wins, losses)
    assert abs(threshold(0.9) - 10) < 1e-9 and evidence_better(5, 0) >= 10 > evidence_better(4, 0)


def boundary(confidence: float, looks: int, candidates: int = 1) -> list[int]:
    """For each number n of discordant items, the fewest wins at which the test adopts (n + 1: never)."""
    needed, edge, wins = RaceRule("race", confidence, 1, candidates).adoption_threshold(), [], 0
    for n in range(looks + 1):
        wins = max(0, wins - 1)
        while wins <= n and evidence_better(wins, n - wins) < needed:
            wins += 1
        edge.append(wins)
    return edge


def false_adoptions(p_win: float, confidence: float, runs: int, looks: int, seed: int = 7, candidates: int = 1) -> float:
    """Share of runs (steps) in which any of `candidates` candidates with win share p_win is ever adopted,
    each looked at after every item."""
    edge, rng, adopted = boundary(confidence, looks, candidates), random.Random(seed), 0
    for _ in range(runs):
        hit = False
        for _candidate in range(candidates):
            wins = 0
            for n in range(1, looks + 1):
                wins += rng.random() < p_win
                if wins >= edge[n]:
                    hit = True
                    break
        adopted += hit
    return adopted / runs


def test_looking_after_every_item_keeps_false_adoptions_below_one_minus_confidence():
    for confidence in (0.9, 0.8):
        for p_win in (0.5, 0.45):
            rate = false_adoptions(p_win, confidence, runs=3000, looks=300)
            assert rate <= 1 - confidence, (confidence, p_win, rate)
    # A fixed-n one-sided test at the same level, applied after every item, is not valid: it adopts far more often.
    naive, rng = 0, random.Random(7)
    for _ in range(3000):
        wins = 0
        for n in range(1, 301):
            wins += rng.random() < 0.5
            if n >= 5 and (wins - n / 2) / (n ** 0.5 / 2) > 1.2816:
                naive += 1
                break
    assert naive / 3000 > 0.3


def test_a_step_of_m_candidates_that_are_not_better_adopts_one_at_most_one_minus_confidence_of_the_time():
    assert false_adoptions(0.5, 0.9, runs=600, looks=200, candidates=5) <= 0.1
    # Without the division by m, five tests at 0.9 each would adopt one far more often.
    edge, rng, hits = boundary(0.9, 200), random.Random(3), 0
    for _ in range(600):
        hits += any(any(w >= edge[n] for n, w in enumerate(_walk(rng, 200), start=1)) for _candidate in range(5))
    assert hits / 600 > 0.2


def _walk(rng, looks):
    wins = 0
    for _ in range(looks):
        wins += rng.random() < 0.5
        yield wins


def test_a_truly_better_candidate_is_adopted():
    assert false_adoptions(0.75, 0.9, runs=500, looks=200) > 0.95


def test_stop_verdicts():
    bar = [True] * 6 + [False] * 14  # the incumbent fails 6 of 20
    race, exact = RaceRule("race", 0.9, 1), RaceRule("exact", 0.9, 1)
    assert stop_verdict(race, bar, [False] * 5) == "better"  # 5 wins, no loss
    assert stop_verdict(race, bar, [True] * 6 + [True] * 5) == "worse"  # 0 wins, 5 losses
    assert stop_verdict(race, bar, [False] * 2 + [True] * 4 + [True] * 3) == "cannot_win"  # 2 wins + 0 left < 5
    assert stop_verdict(race, bar, [False, True]) is None
    assert stop_verdict(exact, bar, [True] * 5) is None  # 5 failures: it may still end with fewer than 6
    assert stop_verdict(exact, bar, [False] * 6 + [True] * 5) is None
    assert stop_verdict(exact, bar, [False] * 6 + [True] * 6) == "cannot_win"
    assert stop_verdict(RaceRule("exact", 0.9, 2), bar, [False] * 6 + [True] * 5) == "cannot_win"
    assert stop_verdict(RaceRule("full"), bar, [True] * 19) is None
    assert stop_verdict(RaceRule("full"), bar, [True] * 20) == "complete"
    # An incumbent that fails nothing cannot be beaten: no item is spent on a candidate.
    assert stop_verdict(race, [False] * 20, []) == "cannot_win" and stop_verdict(exact, [False] * 20, []) == "cannot_win"


def test_choose_adopts_only_shown_better_candidates_and_the_fewest_failures_otherwise():
    race = RaceRule("race", 0.9, 1)
    results = [RaceResult("a", 3, 40, 9, 2, "better"), RaceResult("b", 1, 10, 6, 0, "better"),
               RaceResult("c", 0, 200, 30, 10, "complete")]
    assert choose(race, 20, results).method_id == "b"  # the larger lead per item raced
    assert choose(race, 20, [RaceResult("c", 0, 200, 30, 10, "complete")]) is None
    exact = RaceRule("exact", 0.9, 1)
    full_results = [RaceResult("a", 5, 20, 0, 0, "complete"), RaceResult("b", 4, 20, 0, 0, "complete"),
                    RaceResult("c", 6, 9, 0, 0, "cannot_win")]
    assert choose(exact, 6, full_results).method_id == "b"
    assert choose(exact, 4, full_results) is None  # an equal count never wins


def test_the_race_order_puts_the_items_that_selected_the_incumbent_last():
    assert race_order([0, 1, 2, 3, 4], None) == [0, 1, 2, 3, 4]
    assert race_order([0, 1, 2, 3, 4], [0, 1]) == [2, 3, 4, 0, 1]
