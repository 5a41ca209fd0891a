"""The workflow graph end to end with a deterministic fake model."""

from __future__ import annotations

import json
import re

import pytest

from conftest import make_settings, shared_data, run_workflow
from fakes import ScriptedChatModel, default_responder, good_evolution, instruction_of, method_of, task_of
from nodes.selector import is_strictly_better, stop_reason


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _score(rate, gain, method_id="x"):
    return {"method_id": method_id, "failure_rate": rate, "complexity_gain": gain, "dev_size": 10}


def test_strictly_better_needs_a_lower_rate_an_equal_rate_never_wins():
    incumbent = _score(0.3, 1.5)
    assert is_strictly_better(_score(0.2, 1.0), incumbent)
    assert not is_strictly_better(_score(0.3, 1.6), incumbent)  # issue 21: a tie keeps the incumbent
    assert not is_strictly_better(_score(0.3, 1.5), incumbent)
    assert not is_strictly_better(_score(0.4, 9.0), incumbent)


def test_stop_reasons():
    assert stop_reason(3, 0, max_steps=3, patience=2).startswith("reached max_steps")
    assert "patience" in stop_reason(2, 2, max_steps=5, patience=2)
    assert stop_reason(1, 1, max_steps=5, patience=2) == ""


def test_incumbent_is_kept_when_no_candidate_is_strictly_better(tmp_path):
    settings = make_settings(tmp_path, max_steps=2, patience=5, selection="full")
    values = run_workflow(settings, ScriptedChatModel())
    assert values["method_id"] == "e0"
    assert [h["kept_method_id"] for h in values["history"]] == ["e0", "e0"]
    assert "not strictly better" in values["history"][0]["decision"]


def _world_where_variant_1_is_better(prompt: str, seed):
    """e0 gives unchanged copies for half the instructions; the method with 'Variant 1' never does."""
    if task_of(prompt) == "evolve" and "Variant 1" not in method_of(prompt):
        instruction = instruction_of(prompt)
        if len(instruction) % 2:
            return f"#Finally Rewritten Instruction#\n{instruction}"
    return default_responder(prompt, seed)


def test_a_strictly_better_candidate_replaces_the_method_and_its_score_is_reused(tmp_path):
    settings = make_settings(tmp_path, max_steps=3, patience=1, candidate_size=3, selection="full")
    model = ScriptedChatModel(responder=_world_where_variant_1_is_better)
    values = run_workflow(settings, model)
    first, second = values["history"][0], values["history"][1]
    assert first["kept_method_id"] == "s1c1" and "beats" in first["decision"]
    assert values["method_id"] == "s1c1" and "Variant 1" in values["method"]
    assert values["e0_score"]["failure_rate"] > values["method_score"]["failure_rate"]
    # The incumbent is scored once per method: step 2 validates only its candidates.
    validated_in_step_2 = [c["method_id"] for c in second["candidates"] if c["score"]]
    assert "s1c1" not in validated_in_step_2 and second["incumbent"]["method_id"] == "s1c1"
    assert "patience" in values["stop_reason"]


def test_loop_stops_at_max_steps(tmp_path):
    values = run_workflow(make_settings(tmp_path, max_steps=3, patience=10), ScriptedChatModel())
    assert values["step"] == 3 and len(values["history"]) == 3 and "max_steps" in values["stop_reason"]


def test_m_candidates_come_from_m_distinct_samples(tmp_path):
    model = ScriptedChatModel()
    values = run_workflow(make_settings(tmp_path, candidate_size=4, max_steps=1), model)
    candidates = values["history"][0]["candidates"]
    assert len(candidates) == 4 and len({c["text"] for c in candidates}) == 4
    optimize_seeds = {c["seed"] for c in model.calls if c["task"] == "optimize"}
    analyze_seeds = {c["seed"] for c in model.calls if c["task"] == "analyze"}
    assert len(optimize_seeds) == 4 and len(analyze_seeds) == 4


def test_trajectory_prompt_carries_case_ids(tmp_path):
    model = ScriptedChatModel()
    values = run_workflow(make_settings(tmp_path, batch_size=3, max_steps=1, loop=2), model)
    analyze_prompt = next(c["prompt"] for c in model.calls if c["task"] == "analyze")
    assert re.findall(r"### Case (\d+)", analyze_prompt) == ["1", "2", "3"]
    trajectory = values["history"][0]["trajectories"][0]
    assert len(trajectory["stages"]) == 3  # stage 0 and two evolutions
    assert f"Stage 2: {trajectory['stages'][2]}" in analyze_prompt


def test_unparseable_optimizer_answer_keeps_the_method_and_is_recorded(tmp_path):
    def responder(prompt, seed):
        return "I would change a few things." if task_of(prompt) == "optimize" else default_responder(prompt, seed)

    settings = make_settings(tmp_path, max_steps=1, optim_llm=make_settings(tmp_path).optim_llm.model_copy(
        update={"parse_mode": "strict", "max_retries": 1}))
    values = run_workflow(settings, ScriptedChatModel(responder=responder))
    candidates = values["history"][0]["candidates"]
    assert {c["parse"] for c in candidates} == {"unparseable"} and all(c["score"] is None for c in candidates)
    assert values["method_id"] == "e0" and values["method"].startswith("You are an instruction rewriter")
    assert "no candidate" in values["history"][0]["decision"]


def _failing_world(prompt: str, seed):
    """Some evolutions copy their parent, some answers ask for more information."""
    task = task_of(prompt)
    if task == "evolve":
        instruction = instruction_of(prompt)
        if "06" in instruction or instruction.count("step by step") >= 2 and "07" in prompt:
            return f"#Finally Rewritten Instruction#\n{instruction}"
        return good_evolution(instruction)
    if task == "respond" and ("09" in prompt or "05" in prompt):
        return "To answer well I need more context. Please provide the name of the city you mean."
    return default_responder(prompt, seed)


TOPICS = ["Why do cats purr?", "Plan a picnic menu.", "Explain compound interest.", "Write a haiku on rain.",
          "How does a vaccine work?", "Compare tea and coffee.", "Sort a list in Python.", "Name three moons of Jupiter.",
          "Describe the water cycle.", "Give tips for a job interview.", "What causes tides?", "Summarise Hamlet.",
          "How do bees find flowers?", "Design a logo brief.", "Translate a recipe into metric units.",
          "Why is the sky blue?", "List causes of inflation.", "Explain recursion to a child.",
          "How are glaciers formed?", "Draft a polite complaint email."]


def _numbered_data(tmp_path, rows=12):
    path = tmp_path / "numbered.jsonl"
    lines = [json.dumps({"id": f"r{i:02d}", "instruction": f"Task {i:02d}: {TOPICS[i]}"}) for i in range(rows)]
    lines.append(json.dumps({"id": "blank", "instruction": "   "}))
    lines.append(json.dumps({"id": "number", "instruction": 42}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_generation_runs_loop_levels_each_from_the_last_levels_survivors(tmp_path):
    settings = make_settings(tmp_path, data_path=str(_numbered_data(tmp_path)), max_steps=0, loop=3,
                             train_size=2, dev_size=2)
    values = run_workflow(settings, ScriptedChatModel(responder=_failing_world))
    out = tmp_path / "out"
    records, failures = _read_jsonl(out / "records.jsonl"), _read_jsonl(out / "failures.jsonl")
    by_level = {level: {r["root_id"] for r in records if r["level"] == level} for level in (1, 2, 3)}
    assert by_level[3] <= by_level[2] <= by_level[1] and by_level[1]
    assert "r06" not in by_level[1] and "r05" not in by_level[1]  # unchanged copy, F failure
    for record in records:
        if record["level"] > 1:
            parent = next(r for r in records if r["id"] == record["parent_id"])
            assert parent["level"] == record["level"] - 1 and record["instruction"].startswith(parent["instruction"])
    reasons = {(f["root_id"], f["level"]): f["reason"] for f in failures}
    assert reasons[("r06", 1)] == "unchanged" and reasons[("r05", 1)] == "asks_for_input"
    assert reasons[("blank", 0)] == "empty_instruction" and reasons[("number", 0)] == "non_string_instruction"
    assert values["level"] == 3


def test_every_input_row_is_accounted_for_at_every_level(tmp_path):
    settings = make_settings(tmp_path, data_path=str(_numbered_data(tmp_path, rows=20)), max_steps=0, loop=3,
                             batch_size=2, train_size=2, dev_size=2)
    run_workflow(settings, ScriptedChatModel(responder=_failing_world))
    out = tmp_path / "out"
    records, failures = _read_jsonl(out / "records.jsonl"), _read_jsonl(out / "failures.jsonl")
    roots = {json.loads(line)["id"] for line in (tmp_path / "numbered.jsonl").read_text().splitlines()}
    keys = [(r["id"], r["level"]) for r in records + failures]
    assert len(keys) == len(set(keys))
    failed_at = {f["root_id"]: f["level"] for f in failures}
    for level in (1, 2, 3):
        for root in roots:
            at_level = any(r["root_id"] == root and r["level"] == level for r in records + failures)
            assert at_level or failed_at.get(root, 99) < level, (root, level)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["accounting_holds"] and run["counts"]["rows_in"] == 22


def test_output_schema_and_utf8(tmp_path):
    settings = make_settings(tmp_path, max_steps=1, loop=1, response_field="input", test_run=True)
    run_workflow(settings, ScriptedChatModel())
    out = tmp_path / "out"
    raw = (out / "records.jsonl").read_text(encoding="utf-8")
    assert "\\u" not in raw and re.search(r"[\uac00-\ud7a3]", raw)
    records = _read_jsonl(out / "records.jsonl")
    assert len(records) == 10  # --test-run
    for record in records:
        assert {"id", "root_id", "parent_id", "level", "instruction", "response", "original", "method_id",
                "reference"} <= record.keys()
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert {"settings", "history", "counts", "token_usage", "phase_seconds", "e0_score", "final_score"} <= run.keys()
    assert set(run["token_usage"]) == {"evolve", "analyze", "optimize", "respond"}
    step = run["history"][0]
    assert step["trajectories"] and step["feedback"] and step["candidates"][0]["score"]["failure_rate"] is not None
    assert (out / "method.txt").read_text(encoding="utf-8").strip() == run["method"]
    assert run["counts"]["accounting_holds"] and run["counts"]["levels"]["0"]["skipped"] == 50
    assert set(run["phase_seconds"]) == {"load", "optimization", "generation"}


def test_method_file_skips_optimization(tmp_path):
    method = tmp_path / "method.txt"
    method.write_text("Rewrite the instruction so it needs one more reasoning step.", encoding="utf-8")
    model = ScriptedChatModel()
    values = run_workflow(make_settings(tmp_path, method_file=str(method), loop=1, test_run=True), model)
    assert values["method_id"] == "file" and not values.get("history")
    assert set(model.tasks()) == {"evolve", "respond"}
    assert all("one more reasoning step" in c["prompt"] for c in model.calls if c["task"] == "evolve")


@pytest.mark.parametrize("data", ["ko_seed.jsonl", "en_seed_tasks.jsonl"])
def test_shared_seed_sets_run(tmp_path, data):
    extra = {"input_field": "input", "response_field": "output"} if data.startswith("en") else {}
    settings = make_settings(tmp_path, data_path=str(shared_data(data)), max_steps=1, loop=1, test_run=True, **extra)
    values = run_workflow(settings, ScriptedChatModel())
    assert values["level_counts"]["1"]["parents"] == 10
