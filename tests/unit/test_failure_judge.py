"""The optional failure judge: rules first, then one structured question per item and stage.

A simulated endpoint (tests/chat_server.py on 127.0.0.1) or the fake chat model answers the judge's
prompts by a planted label, so the combined detector must follow the planted labels exactly.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chat_server import ChatServer
from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder, task_of

from failure_checks.classify import judged, read_lines, rules_detector
from failure_checks.evaluate import CORPUS_DIR
from failure_checks.rules import FailureRules
from llm_tasks.judge import RESPONSE_VERDICTS, parse_verdict
from nodes.validator import score_in_order, summarize
from resources import RunResources

ROOT = Path(__file__).resolve().parents[2]


async def score_method(method_id: str, method: str, dev: list, resources) -> dict:
    """A method's full score on the dev set (no stop rule)."""
    results, _ = await score_in_order(method_id, method, dev, resources)
    return summarize(method_id, results)


def is_judge_of_answers(prompt: str) -> bool:
    return prompt.startswith("You check whether an assistant's answer")


def is_judge_of_evolutions(prompt: str) -> bool:
    return prompt.startswith("An instruction was rewritten")


def between(prompt: str, tag: str) -> str:
    return prompt.split(f"<{tag}>\n", 1)[1].split(f"\n</{tag}>", 1)[0]


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("VERDICT: asks_back", "asks_back"), ("**Verdict:** refuses", "refuses"), ("verdict: OK", "ok"),
     ("I would say off_topic.", "off_topic"), ("VERDICT: maybe", None), ("", None)],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text, RESPONSE_VERDICTS) == verdict


class ServerThread:
    """A ChatServer on its own event loop in a thread, so synchronous code can call it."""

    def __init__(self, answer):
        self.loop = asyncio.new_event_loop()
        self.server = ChatServer(latency=0.001, answer=answer)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def planted_labels(items, text_field):
    """The corpus labels, except every fifth ok item planted as a failure: the judge says what it is told."""
    planted = {}
    for n, item in enumerate(items):
        wrong = "off_topic" if text_field == "response" else "irrelevant_addition"
        planted[item[text_field]] = wrong if item["label"] == "ok" and n % 5 == 0 else item["label"]
    return planted


@pytest.mark.parametrize(("file", "kind", "field", "tag"), [
    ("responses.jsonl", "responses", "response", "answer"),
    ("evolutions.jsonl", "evolutions", "evolved", "rewritten"),
])
def test_combined_detector_follows_the_planted_labels(tmp_path, file, kind, field, tag):
    items = read_lines(CORPUS_DIR / file, labeled=True)
    planted = planted_labels(items, field)

    def answer(prompt, seed):
        return f"Reasoning aside.\nVERDICT: {planted[between(prompt, tag)]}"

    rules_detect = rules_detector(FailureRules.load(), kind)
    with ServerThread(answer) as server:
        config = tmp_path / "judge.yaml"
        config.write_text(f"base_url: {server.base_url}\nmodel: judge-sim\nmax_retries: 0\ntimeout: 10\n",
                          encoding="utf-8")
        reasons, usage = judged(items, kind, rules_detect, str(config))
        served = server.served
    passed_by_rules = [item for item in items if rules_detect(item) is None]
    assert served == usage["calls"] == len(passed_by_rules)  # one call per item the rules passed, no more
    for item, reason in zip(items, reasons):
        by_rules = rules_detect(item)
        expected = by_rules if by_rules is not None else planted[item[field]]
        assert (reason or "ok") == expected, item["id"]


def test_an_answer_without_a_verdict_leaves_the_rules_verdict(tmp_path):
    items = read_lines(CORPUS_DIR / "responses.jsonl", labeled=True)[:30]
    rules_detect = rules_detector(FailureRules.load(), "responses")
    with ServerThread(lambda prompt, seed: "Hard to say; it depends.") as server:
        config = tmp_path / "judge.yaml"
        config.write_text(f"base_url: {server.base_url}\nmodel: judge-sim\n", encoding="utf-8")
        reasons, _ = judged(items, "responses", rules_detect, str(config))
    assert reasons == [rules_detect(item) for item in items]


def test_an_unreachable_judge_is_one_line(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"response": "Phobos is a moon of Mars."}) + "\n", encoding="utf-8")
    config = tmp_path / "judge.yaml"
    config.write_text("base_url: http://127.0.0.1:9/v1\nmodel: gone\nmax_retries: 0\ntimeout: 2\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "failure_checks.classify", "--responses", str(answers),
                             "--judge", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --judge ") and "127.0.0.1:9" in lines[0]


# --- in a run ------------------------------------------------------------------------------------

DEV = ["Explain how tides work.", "Describe the water cycle.", "Plan a picnic menu.", "Compare tea and coffee."]


def judging_world(prompt, seed):
    """Planted: the evolution of the tides item is contradictory; the answer about tea is off topic."""
    if is_judge_of_evolutions(prompt):
        return "VERDICT: contradictory" if "tides" in between(prompt, "original") else "VERDICT: ok"
    if is_judge_of_answers(prompt):
        return "VERDICT: off_topic" if "tea" in between(prompt, "instruction") else "VERDICT: ok"
    return default_responder(prompt, seed)


@pytest.mark.parametrize("mode", ["dev", "all"])
def test_dev_validation_counts_the_judges_classes(tmp_path, mode):
    model = ScriptedChatModel(responder=judging_world)
    settings = make_settings(tmp_path, failure_judge=mode)
    resources = RunResources.build(settings, models={"evol": model, "optim": model})
    dev = [{"case_id": i, "row_id": f"r{i}", "instruction": text} for i, text in enumerate(DEV)]
    score = asyncio.run(score_method("e0", "Make it harder.", dev, resources))
    assert score["failures_by_reason"] == {"contradictory": 1, "off_topic": 1}
    judge_prompts = [c["prompt"] for c in model.calls if is_judge_of_answers(c["prompt"])
                     or is_judge_of_evolutions(c["prompt"])]
    # At most one question per dev item per stage: 4 evolutions, 3 answers (the contradictory one is not answered).
    assert len(judge_prompts) == 7
    assert resources.llms.usage_by_role()["judge"]["calls"] == 7


def test_judge_off_asks_nothing(tmp_path):
    model = ScriptedChatModel(responder=judging_world)
    resources = RunResources.build(make_settings(tmp_path), models={"evol": model, "optim": model})
    dev = [{"case_id": i, "row_id": f"r{i}", "instruction": text} for i, text in enumerate(DEV)]
    score = asyncio.run(score_method("e0", "Make it harder.", dev, resources))
    assert score["failures_by_reason"] == {}
    assert not any(is_judge_of_answers(c["prompt"]) or is_judge_of_evolutions(c["prompt"]) for c in model.calls)


def _data(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": t}) + "\n" for i, t in enumerate(DEV)),
                    encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("mode", "judged_in_generation"), [("dev", False), ("all", True)])
def test_generation_is_judged_only_with_all(tmp_path, mode, judged_in_generation):
    settings = make_settings(tmp_path, data_path=_data(tmp_path), max_steps=0, loop=1, failure_judge=mode,
                             diversity=["none"])
    run_workflow(settings, ScriptedChatModel(responder=judging_world))
    out = tmp_path / "out"
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = sorted(f["reason"] for f in failures if f["level"] == 1)
    assert reasons == (["contradictory", "off_topic"] if judged_in_generation else [])
    records = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == (2 if judged_in_generation else 4)


def test_judge_llm_config_sends_the_judge_to_its_own_endpoint(tmp_path):
    with ServerThread(lambda prompt, seed: judging_world(prompt, seed)) as server:
        config = tmp_path / "judge.yaml"
        config.write_text(f"base_url: {server.base_url}\nmodel: judge-sim\n", encoding="utf-8")
        model = ScriptedChatModel(responder=judging_world)
        settings = make_settings(tmp_path, failure_judge="dev", judge_llm_config=str(config))
        resources = RunResources.build(settings, models={"evol": model, "optim": model})
        dev = [{"case_id": i, "row_id": f"r{i}", "instruction": text} for i, text in enumerate(DEV)]
        score = asyncio.run(score_method("e0", "Make it harder.", dev, resources))
        served = server.served
    assert score["failures_by_reason"] == {"contradictory": 1, "off_topic": 1}
    assert served == 7
    assert not any(is_judge_of_answers(c["prompt"]) or is_judge_of_evolutions(c["prompt"]) for c in model.calls)
    assert resources.llms.usage_by_role()["judge"]["calls"] == 7
    assert {e["llm"] for e in resources.llms.endpoint_stats()} >= {"judge", "evol"}


def test_a_bad_judge_llm_config_is_one_line(tmp_path):
    from user_errors import ConfigError

    settings = make_settings(tmp_path, failure_judge="dev", judge_llm_config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml"):
        RunResources.build(settings)


def test_a_bad_judge_llm_config_stops_the_run_before_anything_starts(tmp_path):
    result = subprocess.run([sys.executable, "run.py", "--evol-llm-config", "openai", "--optim-llm-config", "openai",
                             "--failure-judge", "dev", "--judge-llm-config", str(tmp_path / "nope.yaml"),
                             "--save-path", str(tmp_path / "out"), "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OPENAI_API_KEY": "x"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: LLM config ") and "nope.yaml" in result.stderr


@pytest.mark.parametrize(("mode", "phases"), [
    ("off", set()),
    ("dev", {"optimization: failure judge"}),
    ("all", {"optimization: failure judge", "generation: failure judge"}),
])
def test_dry_run_plans_the_judge(tmp_path, mode, phases):
    from run_report.plan import plan_run

    settings = make_settings(tmp_path, failure_judge=mode, dev_size=5, max_steps=2, candidate_size=3, loop=2)
    plans = {plan.phase: plan for plan in plan_run(settings, ["Explain recursion."] * 10)}
    assert {name for name in plans if "judge" in name} == phases
    if phases:
        validations = (2 * 3 + 1) * 5  # (steps * m + 1) methods scored on 5 dev items
        assert plans["optimization: failure judge"].calls == 2 * validations  # one per item per stage
    if mode == "all":
        assert plans["generation: failure judge"].calls == 2 * 10 * 2


def test_the_analyzer_sees_the_incumbents_failures_by_class(tmp_path):
    def world(prompt, seed):
        if task_of(prompt) == "respond":
            return "Paste the code here and I'll find the bug for you."
        return default_responder(prompt, seed)

    rows = [f"Task {i}: explain topic number {i} to a curious student." for i in range(8)]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": t}) + "\n" for i, t in enumerate(rows)),
                    encoding="utf-8")
    settings = make_settings(tmp_path, data_path=str(path), max_steps=2, patience=3, train_size=3, dev_size=3,
                             batch_size=2, loop=1, candidate_size=1, diversity=["none"])
    model = ScriptedChatModel(responder=world)
    run_workflow(settings, model)
    analyses = [c["prompt"] for c in model.calls if c["task"] == "analyze"]
    assert len(analyses) == 2
    # The incumbent is scored before the first step's candidates (issue 21), so both steps see its classes:
    # every dev answer of the kept method asked for input.
    assert all("asks_for_input: 3" in analysis for analysis in analyses)
