"""Issue 14: broken candidate methods are never validated, dev rates carry intervals, noise is named."""

from __future__ import annotations

import json

import pytest

from conftest import make_settings, run_workflow
from failure_checks.rules import FailureRules
from fakes import ScriptedChatModel, default_responder, instruction_of, method_of, task_of
from llm_tasks.templates import initial_method
from nodes.selector import _decision, is_strictly_better, within_noise
from nodes.validator import summarize, wilson_interval
from run import build_parser, print_summary
from run_report.html_report import write_report
from run_report.sections import candidate_intervals

SCAFFOLDING_ONLY = "새로\n(Stage 2 could not be produced: runaway_length: 4100 chars)\n</feedback>"
LONG_SCAFFOLDING = initial_method() + "\n\n### Case 3\nStage 0: 김치찌개를 끓이는 방법\n</feedback>\nKeep the steps short."


def _optimizer_writes_scaffolding(prompt: str, seed):
    if task_of(prompt) == "optimize":
        body = SCAFFOLDING_ONLY if seed == 0 else LONG_SCAFFOLDING
        return f"I rewrote it.\n```Optimized Method\n{body}\n```"
    return default_responder(prompt, seed)


def test_a_scaffolding_only_candidate_is_rejected_unvalidated_and_the_incumbent_kept(tmp_path):
    model = ScriptedChatModel(responder=_optimizer_writes_scaffolding)
    values = run_workflow(make_settings(tmp_path, max_steps=1, candidate_size=2), model)
    assert values["method_id"] == "e0" and values["method"] == initial_method()
    step = values["history"][0]
    by_id = {c["method_id"]: c for c in step["candidates"]}
    assert by_id["s1c0"]["status"] == "rejected" and by_id["s1c0"]["rejection"]["reason"] == "too_short"
    assert by_id["s1c1"]["rejection"]["reason"] == "template_scaffolding"
    assert "</feedback>" in by_id["s1c1"]["rejection"]["detail"] or "case 3" in by_id["s1c1"]["rejection"]["detail"]
    assert all(c["score"] is None and c["text"] is None for c in step["candidates"])
    # No validation call applied a rejected method: every evolve prompt used e0.
    evolve_methods = {method_of(c["prompt"]) for c in model.calls if c["task"] == "evolve"}
    assert evolve_methods == {initial_method().strip()}
    assert "no candidate could be validated" in step["decision"]
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["history"][0]["candidates"][0]["rejection"]["reason"] == "too_short"
    assert (out / "method.txt").read_text(encoding="utf-8").strip() == initial_method().strip()
    assert "rejected: too_short" in (out / "report.html").read_text(encoding="utf-8")


def test_the_method_gate_reasons():
    rules, e0 = FailureRules.load(), initial_method()
    better = e0 + "\nKeep every number and every name that the original instruction gives."
    assert rules.check_method(better, e0) is None
    assert rules.check_method(e0 + "\nShort.", e0).reason == "near_copy"
    assert rules.check_method("Rewrite it harder. #Finally Rewritten Instruction#", e0).reason == "too_short"
    no_protocol = better.replace("#Finally Rewritten Instruction#", "#Result#")
    assert rules.check_method(no_protocol, e0).reason == "no_output_protocol"
    korean_protocol = better.replace("#Finally Rewritten Instruction#", "#최종 재작성된 지시문#")
    assert rules.check_method(korean_protocol, e0) is None
    for scaffold in ("<method>", "{instruction}", "### Case 2", "(Stage 1 could not be produced: empty)"):
        assert rules.check_method(better + "\n" + scaffold, e0).reason == "template_scaffolding", scaffold
    # A phrase the incumbent already has (a user's --method-file) is not new scaffolding.
    with_tags = "<method>\n" + better
    assert rules.check_method(with_tags + "\nAlso never answer the instruction yourself.", with_tags) is None


def test_wilson_interval_values():
    assert wilson_interval(0, 6) == [0.0, 0.3903]
    assert wilson_interval(3, 6) == [0.1876, 0.8124]
    assert wilson_interval(6, 6) == [0.6097, 1.0]
    low, high = wilson_interval(10, 50)
    assert low < 0.2 < high and high - low < wilson_interval(2, 10)[1] - wilson_interval(2, 10)[0]


def _score(failures, dev_size, gain=1.0, method_id="x"):
    return summarize(method_id, [{"reason": "unchanged"}] * failures + [{"gain": gain}] * (dev_size - failures))


def test_min_improvement_counts_dev_items():
    incumbent = _score(3, 6, method_id="e0")
    assert is_strictly_better(_score(2, 6), incumbent)
    assert not is_strictly_better(_score(2, 6), incumbent, min_improvement=2)
    assert is_strictly_better(_score(1, 6), incumbent, min_improvement=2)
    tie_with_more_gain = _score(3, 6, gain=2.0)
    assert not is_strictly_better(tie_with_more_gain, incumbent)  # issue 21: a tie never wins
    assert not is_strictly_better(tie_with_more_gain, incumbent, min_improvement=2)
    adopt, decision = _decision(_score(2, 6, method_id="s1c0"), incumbent, 2)
    assert not adopt and "--min-improvement" in decision


def test_a_win_inside_the_incumbents_interval_is_called_noise():
    small_win = _decision(_score(2, 6, method_id="s1c0"), _score(3, 6, method_id="e0"), 1)
    assert small_win[0] and "within noise for a dev set of 6" in small_win[1]
    clear_win = _decision(_score(2, 50, method_id="s1c0"), _score(25, 50, method_id="e0"), 1)
    assert clear_win[0] and "noise" not in clear_win[1]
    assert within_noise(_score(2, 6), _score(3, 6)) and not within_noise(_score(2, 50), _score(25, 50))


def test_min_improvement_flag_reaches_the_settings():
    assert build_parser().parse_args(["--min-improvement", "3"]).min_improvement == 3
    assert build_parser().parse_args([]).min_improvement == 1


def _world_where_variant_1_is_better(prompt: str, seed):
    if task_of(prompt) == "evolve" and "Variant 1" not in method_of(prompt) and len(instruction_of(prompt)) % 2:
        return f"#Finally Rewritten Instruction#\n{instruction_of(prompt)}"
    return default_responder(prompt, seed)


def test_intervals_reach_run_json_the_report_and_the_summary(tmp_path, capsys):
    settings = make_settings(tmp_path, max_steps=1, candidate_size=2, selection="full")
    values = run_workflow(settings, ScriptedChatModel(responder=_world_where_variant_1_is_better))
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    for score in (run["e0_score"], run["final_score"]):
        low, high = score["failure_rate_interval"]
        assert low <= score["failure_rate"] <= high and high - low > 0.2  # six dev items are few
    assert all(i for i in candidate_intervals(run["history"]))
    print_summary(values, settings)
    summary = capsys.readouterr().out
    e0 = run["e0_score"]
    assert f"e0 {e0['failure_rate']:.3f} [{e0['failure_rate_interval'][0]:.3f}-" in summary
    # 5 of 6 against 0 of 6 is a clear win: no noise is claimed.
    assert run["method_id"] == "s1c1" and "noise" not in summary and "noise" not in run["history"][0]["decision"]
    write_report(out)
    assert "rate per optimization step" in (out / "report.html").read_text(encoding="utf-8")


def test_the_summary_says_when_the_final_win_is_within_noise(tmp_path, capsys):
    settings = make_settings(tmp_path)
    (tmp_path / "out").mkdir()
    run = {"e0_score": _score(3, 6, method_id="e0"), "final_score": _score(2, 6, method_id="s1c0"),
           "method_id": "s1c0", "stop_reason": "reached max_steps (1)",
           "counts": {"rows_in": 60, "generation_set": 60, "levels": {}, "lenient_parses_per_level": {}}}
    (tmp_path / "out" / "run.json").write_text(json.dumps(run), encoding="utf-8")
    print_summary({}, settings)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dev failure rate"))
    assert "e0 0.500 [0.188-0.812] -> s1c0 0.333 [0.097-0.700]" in line
    assert "within noise for a dev set of 6" in line


@pytest.mark.parametrize("text", ["1.\n- 2.\n- 3.\n- 4.", "1)\n2)\n3)\n4)", "가.\n나.\n다.", "- \n- \n- \n-",
                                  "...!!! ??? ... !!!", "좋아 좋아 좋아 좋아 좋아 좋아 정말", "ㅋㅋㅋㅋㅋㅋㅋㅋ",
                                  "very very very very very very good", "1. 설명\n2. 설명\n3. 설명\n4. 설명\n5. 설명\n6. 설명"])
def test_degenerate_evolutions_are_rejected(text):
    from failure_checks.markers import ParsedText

    failure = FailureRules.load().check_evolution("김치찌개를 끓이는 방법을 알려 주세요. Explain it well.", ParsedText(text))
    assert failure is not None and failure.reason in ("degenerate", "empty")


@pytest.mark.parametrize("text", ["Write a story with:\n1. a dragon\n2. a knight\n3. a twist ending.",
                                  "다음 조건으로 김치찌개 조리법을 설명하세요:\n1. 재료 목록\n2. 단계별 순서\n3. 주의할 점",
                                  "12 * 7 = ? Show each step of the multiplication and check it by division.",
                                  "Compare the the two essays on style, tone and argument, citing one line of each."])
def test_instructions_with_lists_and_symbols_are_not_degenerate(text):
    from failure_checks.markers import ParsedText

    failure = FailureRules.load().check_evolution("Explain a thing. 설명해 주세요.", ParsedText(text))
    assert failure is None or failure.reason != "degenerate"
