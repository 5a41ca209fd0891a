"""What a user sees of a run: progress events, token usage and cost, the budget, the dry-run plan."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import fake_llm_config, make_settings, run_workflow
from fakes import ScriptedChatModel
from llm_access.client import BudgetReached
from cli_helpers import run_cli


def test_nodes_emit_progress_events_on_the_custom_stream(tmp_path):
    from graph.workflow import build_graph
    from resources import RunResources
    from run import prepare_directory

    settings = make_settings(tmp_path, max_steps=1, loop=2, test_run=True)
    prepare_directory(settings, overwrite=False)
    model = ScriptedChatModel()
    resources = RunResources.build(settings, models={"evol": model, "optim": model})
    config = {"configurable": {"thread_id": "t", "resources": resources}, "recursion_limit": 500}

    async def collect():
        return [data async for _, mode, data in
                build_graph().astream({}, config, stream_mode=["updates", "custom"], subgraphs=True) if mode == "custom"]

    events = asyncio.run(collect())
    kinds = {e["event"] for e in events}
    assert kinds == {"validation", "step", "level"}
    validation = [e for e in events if e["event"] == "validation" and e["method_id"] == "e0"]
    assert [e["done"] for e in validation] == list(range(1, settings.dev_size + 1))
    last_level_2 = [e for e in events if e["event"] == "level" and e["level"] == 2][-1]
    assert last_level_2["done"] == last_level_2["total"] == 10 and last_level_2["output_tokens"] > 0


def test_cost_comes_from_the_configured_prices(tmp_path):
    priced = fake_llm_config("evol", input_price_per_million=1.0, output_price_per_million=2.0)
    settings = make_settings(tmp_path, max_steps=0, loop=1, test_run=True, evol_llm=priced)
    run_workflow(settings, ScriptedChatModel())
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    usage = run["token_usage"]
    expected = sum(u["input_tokens"] * 1.0 + u["output_tokens"] * 2.0 for u in usage.values()) / 1e6
    assert run["cost"]["total_usd"] == pytest.approx(expected, abs=1e-6) and expected > 0
    assert set(run["cost"]["by_role"]) == {"evolve", "respond"}


def test_budget_stops_the_run_resumably_and_usage_adds_up_across_invocations(tmp_path):
    reference = make_settings(tmp_path / "ref", max_steps=1, loop=2, test_run=True)
    reference_model = ScriptedChatModel()
    run_workflow(reference, reference_model)
    full = json.loads((tmp_path / "ref" / "out" / "run.json").read_text())["token_usage"]
    full_tokens = sum(u["input_tokens"] + u["output_tokens"] for u in full.values())

    settings = make_settings(tmp_path / "budget", max_steps=1, loop=2, test_run=True)
    with pytest.raises(BudgetReached, match="--max-budget-tokens"):
        run_workflow(settings, ScriptedChatModel(), max_budget_tokens=full_tokens // 3)
    run_workflow(settings, ScriptedChatModel(), max_budget_tokens=full_tokens * 2)
    out = tmp_path / "budget" / "out"
    assert (out / "records.jsonl").read_text() == (tmp_path / "ref" / "out" / "records.jsonl").read_text()
    resumed = json.loads((out / "run.json").read_text())["token_usage"]
    # Both invocations counted: together they made every call of the uninterrupted run, some twice. (How
    # many of them the cache answered depends on timing: identical prompts in flight together all go out.)
    assert sum(u["calls"] for u in resumed.values()) >= sum(u["calls"] for u in full.values())


def test_dry_run_prints_the_plan_without_any_llm(tmp_path):
    result = run_cli("--dry-run", "--max-steps", "2", "--candidate-size", "3", "--dev-size", "5", "--loop", "2")
    assert result.returncode == 0, result.stderr
    calls = {line[:44].strip(): line.split()[-4] for line in result.stdout.splitlines()[1:] if len(line) > 44}
    assert calls["optimization: analyze"] == "6"  # 2 steps x 3 samples
    assert calls["optimization: validate (evolve + answer)"] == str(2 * (2 * 3 + 1) * 5)  # e0 once, then 3 per step
    assert "how tokens are estimated" in result.stdout and "server" not in result.stderr
