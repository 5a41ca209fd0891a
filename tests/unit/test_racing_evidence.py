"""Issue 21: the paired sequential test is anytime-valid, and the stop rules behave as documented."""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

from method_selection.evidence import SpendingSignTest, evidence_better, evidence_not_better, spent_alpha, threshold
from method_selection.race import (RaceResult, RaceRule, choose, go_on, hardest_first, next_parent, race_order,
                                   race_rounds, simulate, simulate_step, stop_verdict)


def closed_form_better(wins: int, losses: int) -> Fraction:
    """The uniform-(1/2, 1] mixture against p = 1/2, exactly: sum_{k<=w} C(n+1, k) / ((n+1) C(n, w))."""
    n = wins + losses
    return Fraction(sum(comb(n + 1, k) for k in range(wins + 1)), (n + 1) * comb(n, wins))


def test_the_evidence_is_the_exact_mixture_ratio():
    for wins, losses in [(0, 0), (1, 0), (3, 1), (5, 0), (12, 4), (40, 31), (7, 30), (150, 120)]:
        assert abs(evidence_better(wins, losses) / float(closed_form_better(wins, losses)) - 1) < 1e-9
        assert abs(evidence_not_better(losses, wins) - evidence_better(wins, losses)) < 1e-9 * evidence_better(wins, losses)
    assert abs(threshold(0.9) - 10) < 1e-9 and evidence_better(5, 0) >= 10 > evidence_better(4, 0)


def false_adoptions(p_win: float, confidence: float, runs: int, pool: int, discordance: float = 0.25,
                    seed: int = 7, candidates: int = 1) -> float:
    """Share of runs in which any of `candidates` candidates is shown better, each looked at after every one of
    `pool` items; a discordant item is a win with probability p_win."""
    rng, adopted = random.Random(seed), 0
    for _ in range(runs):
        hit = False
        for _candidate in range(candidates):
            test = SpendingSignTest(1 - confidence, pool)
            for _item in range(pool):
                if rng.random() < discordance:
                    win = rng.random() < p_win
                    incumbent_failed, candidate_failed = win, not win
                else:
                    incumbent_failed = candidate_failed = rng.random() < 0.1
                if test.add(incumbent_failed, candidate_failed):
                    hit = True
                    break
        adopted += hit
    return adopted / runs


def test_looking_after_every_item_keeps_false_adoptions_below_one_minus_confidence():
    for confidence, p_win, tolerance in ((0.9, 0.5, 0.012), (0.8, 0.5, 0.016), (0.9, 0.45, 0.0)):
        rate = false_adoptions(p_win, confidence, runs=3000, pool=200)
        assert rate <= 1 - confidence + tolerance, (confidence, p_win, rate)  # tolerance: 2 SE of 3000 runs
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


def test_the_spending_test_spends_its_whole_alpha_over_the_pool_and_no_more():
    # Exact: the rejected mass after the last item is alpha (up to the discreteness of the last count) under a fair coin.
    test = SpendingSignTest(0.1, 40)
    for _ in range(40):
        test.add(True, False)
    assert 0.09 < test.spent <= 0.1 + 1e-12 and spent_alpha(0.1, 0.5) == 0.025
    assert test.rejected
    quiet = SpendingSignTest(0.1, 40)
    assert not any(quiet.add(False, False) for _ in range(40))  # no discordant item: never shown better


def test_a_truly_better_candidate_is_adopted():
    assert false_adoptions(0.75, 0.9, runs=300, pool=200) > 0.95


def test_stop_verdicts():
    bar = [True] * 6 + [False] * 14  # the incumbent fails 6 of 20
    race, exact = RaceRule("race", 0.9, 1), RaceRule("exact", 0.9, 1)
    assert stop_verdict(race, [True] * 60 + [False] * 140, [False] * 30) == "better"  # 30 wins, no loss
    assert stop_verdict(race, bar, [False] * 5) is None  # 5 wins on 5 of 20 items: too early to spend much alpha
    assert stop_verdict(race, [False] * 5 + [True] * 40, [True] * 5) == "worse"  # 0 wins, 5 losses
    assert stop_verdict(race, bar, [True] * 6) == "cannot_win"  # no win, and no item left the incumbent failed
    assert stop_verdict(race, bar, [False, True]) is None
    assert stop_verdict(race, bar, [False, True, False], limit=3) == "heat"
    assert stop_verdict(exact, bar, [True] * 5) is None  # 5 failures: it may still end with fewer than 6
    assert stop_verdict(exact, bar, [False] * 6 + [True] * 5) is None
    assert stop_verdict(exact, bar, [False] * 6 + [True] * 6) == "cannot_win"
    assert stop_verdict(RaceRule("exact", 0.9, 2), bar, [False] * 6 + [True] * 5) == "cannot_win"
    assert stop_verdict(RaceRule("full"), bar, [True] * 19) is None
    assert stop_verdict(RaceRule("full"), bar, [True] * 20) == "complete"
    # An incumbent that fails nothing cannot be beaten: no item is spent on a candidate.
    assert stop_verdict(race, [False] * 20, []) == "cannot_win" and stop_verdict(exact, [False] * 20, []) == "cannot_win"


def test_cannot_win_stops_only_candidates_no_continuation_could_show_better():
    rng, race, stopped = random.Random(11), RaceRule("race", 0.9, 1), 0
    for _ in range(300):
        bar = [rng.random() < 0.3 for _ in range(60)]
        outcomes = [rng.random() < 0.45 for _ in range(60)]
        scored = simulate(race, bar, lambda k: outcomes[k])
        if stop_verdict(race, bar, scored) != "cannot_win":
            continue
        stopped += 1
        test = SpendingSignTest(0.1, 60)  # the best continuation: pass every item left
        assert not any(test.add(i, c) for i, c in zip(bar, scored + [False] * (60 - len(scored))))
    assert stopped > 30


def test_a_round_continued_from_its_heat_decides_as_one_pass_over_the_pool():
    rng = random.Random(5)
    race = RaceRule("race", 0.9, 1)
    for _ in range(200):
        bar = [rng.random() < 0.25 for _ in range(100)]
        outcomes = [rng.random() < 0.2 for _ in range(100)]
        heat = simulate(race, bar, lambda k: outcomes[k], limit=20)
        whole = simulate(race, bar, lambda k: outcomes[k])
        if len(heat) == 20 and stop_verdict(race, bar, heat, limit=20) == "heat":
            assert simulate(race, bar, lambda k: outcomes[k], None, heat) == whole
        else:
            assert heat == whole[:len(heat)]


def test_the_candidates_that_go_on_and_the_next_parent():
    results = [RaceResult("a", 9, 40, 3, 4, "heat"), RaceResult("b", 6, 40, 5, 3, "heat"),
               RaceResult("c", 6, 40, 7, 4, "heat"), RaceResult("d", 2, 12, 0, 6, "worse")]
    assert [r.method_id for r in go_on(results, 2)] == ["b", "c"]  # fewest failures; ties: the first sample
    assert go_on([RaceResult("d", 2, 12, 0, 6, "worse")], 1) == []
    assert next_parent(results).method_id == "c"  # the largest lead per item among those ahead
    assert next_parent([RaceResult("a", 9, 40, 3, 4, "heat"), RaceResult("d", 0, 12, 9, 0, "worse")]) is None


def test_race_rounds_halve_the_candidates_and_double_the_items():
    assert race_rounds(200, 10) == [(13, 5), (26, 2), (52, 1), (200, 0)]  # the heat: 2/3 of a pass
    assert race_rounds(200, 5) == [(26, 2), (52, 1), (200, 0)]
    assert race_rounds(200, 2) == [(66, 1), (200, 0)]
    assert race_rounds(200, 1) == [(200, 0)] and race_rounds(30, 10) == [(30, 0)]  # no heat below 50 items
    for pool in (50, 77, 200, 1000):
        for m in range(1, 25):
            rounds = race_rounds(pool, m)
            limits = [limit for limit, _ in rounds]
            assert limits == sorted(set(limits)) and limits[-1] == pool and rounds[-1][1] == 0
            assert all(keep >= 1 for _, keep in rounds[:-1]) and (len(rounds) == 1 or rounds[-2][1] == 1)


def test_a_simulated_step_scores_each_round_s_survivors_only():
    rng = random.Random(2)
    bar = [rng.random() < 0.3 for _ in range(200)]
    fails = {(c, k): rng.random() < 0.25 + 0.02 * c for c in range(10) for k in range(200)}
    records = [r for r, _ in simulate_step(RaceRule("race"), bar, lambda c, k: fails[c, k], 10)]
    for (limit, keep), (next_limit, _) in zip(race_rounds(200, 10), race_rounds(200, 10)[1:]):
        past = [r for r in records if r.items > limit]
        assert len(past) <= keep
        out = [r for r in records if r.items == limit and r.verdict == "heat"]
        for r in past:  # those that went on failed no more of the round's items than those that stopped there
            failed_then = sum(fails[int(r.method_id), k] for k in range(limit))
            assert all(failed_then <= o.failures for o in out)


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


def test_exacts_order_puts_the_items_failed_most_first():
    failed = {0: False, 1: True, 2: False, 3: True, 4: False}
    shares = {0: 0.5, 1: 0.5, 2: 0.0, 3: 1.0, 4: 0.5}
    # 3 (failed by all), then the 0.5s with the incumbent's failure (1) first, then the seeded order.
    assert hardest_first([0, 1, 2, 3, 4], failed, shares) == [3, 1, 0, 4, 2]
