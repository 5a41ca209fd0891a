"""Reasoning models in each of their shapes, and prompt-cache figures, against the simulated endpoint.

Reasoning arrives as `reasoning_content`, as `reasoning`, or as <think> text inside the content (closed,
or only the closing tag). It is never parsed as the answer and never reaches a record, a failure or the
method; with --keep-reasoning the records and the dataset carry it. Reasoning and cached input tokens
are counted per role as the server reported them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from chat_server import REASONING_TEXT, ChatServer, ServerShapes, ServerThread, shaped_answer
from conftest import fake_llm_config
from llm_access.client import ChatLLM, split_reasoning
from llm_access.config import LLMConfig
from test_endpoint_probe import llm_file, run_against

SHAPES = ["reasoning_content", "reasoning", "think", "think_close"]
LEAKS = (REASONING_TEXT[:14], "<think>", "</think>")


def test_split_reasoning_keeps_the_answer_and_the_thought_apart():
    assert split_reasoning("<think>\nweigh it\n</think>\n\nThe answer.") == ("The answer.", "weigh it")
    assert split_reasoning("weigh it\n</think>\nThe answer.") == ("The answer.", "weigh it")
    assert split_reasoning("The answer.", "weigh it") == ("The answer.", "weigh it")
    assert split_reasoning("<think>ran out while thinking") == ("", "ran out while thinking")


@pytest.mark.parametrize("shape", SHAPES)
def test_the_facade_separates_reasoning_in_every_shape_and_counts_its_tokens(shape):
    async def scenario():
        shapes = ServerShapes(reasoning=shape, reasoning_tokens=11, usage_style="openai")
        async with ChatServer(latency=0.001, answer=shaped_answer, shapes=shapes) as server:
            llm = ChatLLM(fake_llm_config("evol", base_url=server.base_url))
            answers = [await llm.complete(f"question {i}", role="respond") for i in range(3)]
            return answers, llm.usage["respond"], server.reported

    answers, usage, reported = asyncio.run(scenario())
    for answer in answers:
        assert answer.text == shaped_answer("", None)
        assert REASONING_TEXT in answer.reasoning and "think>" not in answer.reasoning
    assert usage.reasoning_tokens == reported["reasoning_tokens"] == 33
    assert usage.cached_input_tokens == reported["cached_tokens"] > 0


def files_written(out: Path) -> dict[str, str]:
    """Every text file of a run's folder (the answer cache excepted: it keeps reasoning for --keep-reasoning)."""
    texts = {path.name: path.read_text(encoding="utf-8") for path in out.rglob("*")
             if path.is_file() and path.suffix in (".jsonl", ".json", ".txt", ".html", ".md")}
    for path in out.rglob("*.parquet"):
        texts[str(path.relative_to(out))] = json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False)
    return texts


def reasoning_run(tmp_path: Path, shapes: ServerShapes, *flags: str):
    with ServerThread(answer=shaped_answer, shapes=shapes) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url, reasoning=True, max_tokens=None), "--max-steps", "1",
                             "--loop", "1", "--test-run", *flags)
        reported = dict(server.reported)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    return out, json.loads((out / "run.json").read_text(encoding="utf-8")), reported


@pytest.mark.parametrize("shape,usage_style", [("reasoning_content", "deepseek"), ("reasoning", "openai"),
                                               ("think", "deepseek"), ("think_close", None)])
def test_no_reasoning_reaches_the_outputs_and_its_tokens_are_counted_per_role(tmp_path, shape, usage_style):
    out, run, reported = reasoning_run(tmp_path, ServerShapes(reasoning=shape, reasoning_tokens=9,
                                                              usage_style=usage_style))
    for name, text in files_written(out).items():
        for leak in LEAKS:
            assert leak not in text, f"{leak!r} in {name}"
    usage = run["token_usage"]
    assert {"evolve", "analyze", "optimize", "respond", "probe"} <= set(usage)
    assert all(usage[role]["reasoning_tokens"] > 0 for role in ("evolve", "analyze", "optimize", "respond"))
    assert sum(u["reasoning_tokens"] for u in usage.values()) == reported["reasoning_tokens"]
    assert sum(u["cached_input_tokens"] for u in usage.values()) == reported["cached_tokens"]
    assert (reported["cached_tokens"] > 0) == (usage_style is not None)
    assert run["settings"]["evol_llm"]["max_tokens"] == 8192  # reasoning: true raised the default
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    respond = usage["respond"]
    assert (f"| respond | {respond['requests']} | {respond['cached_calls']} | {respond['input_tokens']} | "
            f"{respond['cached_input_tokens']} | {respond['output_tokens']} | {respond['reasoning_tokens']} |") in card
    assert "<th>reasoning_<wbr>tokens</th>" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("shape", SHAPES)
def test_keep_reasoning_puts_it_in_the_records_and_the_dataset_only(tmp_path, shape):
    out, run, _ = reasoning_run(tmp_path, ServerShapes(reasoning=shape, reasoning_tokens=5), "--keep-reasoning")
    records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records and all(r["reasoning"] == REASONING_TEXT for r in records)
    assert all(REASONING_TEXT not in r["response"] + r["instruction"] for r in records)
    rows = pq.read_table(next((out / "dataset").rglob("*.parquet"))).to_pylist()
    assert rows and all(row["reasoning"] == REASONING_TEXT for row in rows)
    for name in ("failures.jsonl", "method.txt"):
        if (out / name).exists():
            assert REASONING_TEXT not in (out / name).read_text(encoding="utf-8")


def test_cost_with_and_without_the_prompt_cache_in_run_json_report_and_card(tmp_path):
    prices = {"input_price_per_million": 1.0, "cached_input_price_per_million": 0.1, "output_price_per_million": 2.0}
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(usage_style="deepseek")) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url, **prices), "--max-steps", "1",
                             "--loop", "1", "--test-run")
        reported = dict(server.reported)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    usage = run["token_usage"].values()
    cached = sum(u["cached_input_tokens"] for u in usage)
    inputs, outputs = sum(u["input_tokens"] for u in usage), sum(u["output_tokens"] for u in usage)
    assert cached == reported["cached_tokens"] > 0 and inputs == reported["prompt_tokens"]
    cost = run["cost"]
    assert cost["total_usd"] == pytest.approx(((inputs - cached) * 1.0 + cached * 0.1 + outputs * 2.0) / 1e6, abs=1e-5)
    assert cost["total_usd_without_cache"] == pytest.approx((inputs * 1.0 + outputs * 2.0) / 1e6, abs=1e-5)
    assert cost["cached_input_share"] == pytest.approx(cached / inputs, abs=1e-3)
    report = (out / "report.html").read_text(encoding="utf-8")
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert f"{cost['total_usd_without_cache']:.4f} USD" in report and f"{cost['total_usd']:.4f} USD" in report
    assert f"{cost['total_usd_without_cache']:.4f} USD without the prompt cache" in card
    assert f"{100 * cost['cached_input_share']:.1f}% of the input tokens were cache hits" in card


def test_the_dry_run_counts_reasoning_tokens_and_estimates_cache_hits_from_the_method_prefix(tmp_path):
    from conftest import make_settings
    from run_report.plan import format_plan, plan_run

    prices = dict(input_price_per_million=1.0, cached_input_price_per_million=0.1, output_price_per_million=2.0)
    plain = fake_llm_config("evol", **prices)
    thinking = LLMConfig(**{**plain.model_dump(), "reasoning": True, "max_tokens": 4000})
    seeds = ["Name three rivers of Europe."] * 20
    plans = {name: plan_run(make_settings(tmp_path, evol_llm=config, optim_llm=config, max_steps=1), seeds)
             for name, config in (("plain", plain), ("thinking", thinking))}
    for plain_phase, thinking_phase in zip(plans["plain"], plans["thinking"]):
        assert plain_phase.reasoning_tokens == 0
        assert thinking_phase.reasoning_tokens == thinking_phase.calls * 1000
    generation = plans["plain"][-1]
    assert 0 < generation.cached_input_tokens < generation.input_tokens
    text = format_plan(plans["thinking"])
    assert "reasoning:" in text and "prompt cache: about" in text and "cost at the cached input price" in text
