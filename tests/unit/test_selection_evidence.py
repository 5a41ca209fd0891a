"""Issue 21: the method is chosen on evidence (ties, the stage the analyzer sees, fresh samples, pruning, racing)."""

from __future__ import annotations

from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder, instruction_of, task_of
from nodes.selector import _decision, is_strictly_better
from nodes.validator import summarize


def _score(failures, dev_size, gain=1.0, method_id="x"):
    return summarize(method_id, [{"reason": "unchanged"}] * failures + [{"gain": gain}] * (dev_size - failures))


def test_an_equal_failure_count_never_replaces_the_incumbent_whatever_the_length():
    incumbent = _score(3, 6, gain=1.1, method_id="e0")
    longer_tie = _score(3, 6, gain=2.5, method_id="s1c0")
    assert not is_strictly_better(longer_tie, incumbent)
    adopt, decision = _decision(longer_tie, incumbent, 1)
    assert not adopt and "beats" not in decision and "not strictly better" in decision
    assert is_strictly_better(_score(2, 6, gain=0.9), incumbent)


def _second_round_copies(prompt: str, seed):
    """The first rewrite works; the second returns its input unchanged, which a rule rejects."""
    if task_of(prompt) == "evolve" and ("step by step" in instruction_of(prompt) or "단계별로" in instruction_of(prompt)):
        return f"#Finally Rewritten Instruction#\n{instruction_of(prompt)}"
    return default_responder(prompt, seed)


def test_the_analyzer_is_told_the_stage_a_rule_rejected_not_the_next_one(tmp_path):
    model = ScriptedChatModel(responder=_second_round_copies)
    values = run_workflow(make_settings(tmp_path, max_steps=1, loop=2, batch_size=2), model)
    trajectory = values["history"][0]["trajectories"][0]
    assert len(trajectory["stages"]) == 3 and trajectory["failure"].startswith("unchanged")
    analyze_prompt = next(c["prompt"] for c in model.calls if c["task"] == "analyze")
    assert "(Stage 2 was produced but rejected: unchanged" in analyze_prompt
    assert "Stage 3" not in analyze_prompt


def test_a_step_that_repeats_an_earlier_steps_prompts_still_draws_new_candidates(tmp_path):
    # The default world keeps e0 and gives the same feedback every step: step 2's prompts repeat step 1's.
    model = ScriptedChatModel()
    values = run_workflow(make_settings(tmp_path, max_steps=2, patience=5, candidate_size=2), model)
    first, second = ([c["text"] for c in step["candidates"]] for step in values["history"])
    assert len(set(first + second)) == 4
    optimize_seeds = [c["seed"] for c in model.calls if c["task"] == "optimize"]
    assert len(optimize_seeds) == 4 and len(set(optimize_seeds)) == 4  # asked, not answered from the cache
