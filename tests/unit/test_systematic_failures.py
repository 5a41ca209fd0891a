"""Systematic failures end the run in one line; cut answers (finish_reason length) are failures `truncated`.

Against the simulated endpoint on 127.0.0.1: in-process for the client facade, and run.py as a user runs it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from chat_server import ChatServer, ServerShapes, ServerThread, shaped_answer
from conftest import fake_llm_config
from llm_access.client import BREAKER_WINDOW, ChatLLM, LLMCallFailed, SystematicFailure
from test_endpoint_probe import llm_file, run_against
from cli_helpers import assert_one_line_error


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_a_repeated_404_trips_the_breaker_instead_of_failing_every_item():
    async def scenario():
        async with ChatServer(latency=0.005, shapes=ServerShapes(chat_status=404)) as server:
            llm = ChatLLM(fake_llm_config("evol", base_url=server.base_url, max_retries=1, parse_mode="strict"))
            outcomes = await asyncio.gather(*(llm.complete(f"q{i}", role="evolve") for i in range(60)),
                                            return_exceptions=True)
            return outcomes, server.received

    outcomes, received = asyncio.run(scenario())
    tripped = [o for o in outcomes if isinstance(o, SystematicFailure)]
    print(f"\n[404] {received} requests for 60 calls; {len(tripped)} calls ended by the breaker: {tripped[0]}")
    assert received <= BREAKER_WINDOW
    assert len(tripped) >= 60 - BREAKER_WINDOW
    assert all(isinstance(o, (SystematicFailure, LLMCallFailed)) for o in outcomes)
    message = str(tripped[0])
    assert "\n" not in message and "HTTP 404" in message and "base_url" in message and "evolve" in message


def test_a_breaker_counts_a_streak_after_the_first_calls_went_well():
    async def scenario():
        async with ChatServer(latency=0.001, shapes=ServerShapes(chat_status=400, fail_from=31)) as server:
            llm = ChatLLM(fake_llm_config("evol", base_url=server.base_url, max_retries=0, concurrency=1))
            outcomes = [await _outcome(llm.complete(f"q{i}", role="respond")) for i in range(60)]
            return outcomes, server.received

    outcomes, received = asyncio.run(scenario())
    assert all(not isinstance(o, Exception) for o in outcomes[:30])
    assert isinstance(outcomes[39], SystematicFailure) and received == 40  # ten 400s in a row
    assert all(isinstance(o, SystematicFailure) for o in outcomes[40:])


async def _outcome(call):
    try:
        return await call
    except Exception as exc:  # kept to compare outcomes
        return exc


def test_a_cut_answer_is_a_failure_truncated_never_parsed():
    async def scenario():
        async with ChatServer(latency=0.001, answer=shaped_answer, shapes=ServerShapes(cut_share=1.0)) as server:
            llm = ChatLLM(fake_llm_config("evol", base_url=server.base_url, max_tokens=64, max_retries=3,
                                          parse_mode="strict"))
            try:
                await llm.complete("#Instruction#\nName three rivers.", role="evolve", accept=lambda text: True)
            except LLMCallFailed as exc:
                return exc, server.chat_requests

    failure, requests = asyncio.run(scenario())
    assert failure.reason == "truncated" and requests == 1  # the same budget would cut it again: not re-asked
    assert "max_tokens=64" in failure.detail and "Name three rivers" not in failure.detail


def test_ten_percent_cut_answers_become_truncated_failures_with_no_partial_text(tmp_path):
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(cut_share=0.1)) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url), "--max-steps", "0", "--loop", "1",
                             "--diversity", "none")
        cut = server.reported["cut"]
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    truncated = [f for f in lines(out / "failures.jsonl") if f["reason"] == "truncated"]
    print(f"\n[10% cut] {cut} answers cut; {len(truncated)} failures truncated")
    assert truncated and len(truncated) <= cut
    assert all("max_tokens=256" in f["detail"] and not f.get("raw") for f in truncated)
    for record in lines(out / "records.jsonl"):
        assert record["instruction"].endswith("Justify each step with a short example.")
        assert record["response"] == shaped_answer("", None)


def test_ninety_percent_cut_ends_the_run_in_one_line_naming_max_tokens(tmp_path):
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(cut_share=0.9)) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url, max_tokens=64))
        received = server.received
    print(f"\n[90% cut] {received} requests: {result.stderr.strip().splitlines()[-1]}")
    assert_one_line_error(result, "max_tokens=64", "finish_reason length", "raise max_tokens")
    assert result.returncode == 2 and received < 50


def test_an_endpoint_that_starts_refusing_after_the_probe_ends_the_run_not_every_row(tmp_path):
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(chat_status=403, fail_from=2)) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url))
        received = server.received
    assert_one_line_error(result, "HTTP 403")
    assert result.returncode == 2 and received <= BREAKER_WINDOW + 4
    assert not (tmp_path / "out" / "records.jsonl").exists() or not lines(tmp_path / "out" / "records.jsonl")


def optimizer_failing_run(tmp_path: Path, *flags: str):
    with ServerThread(answer=shaped_answer) as evol_server, \
            ServerThread(answer=shaped_answer, shapes=ServerShapes(chat_status=404, fail_from=2)) as optim_server:
        evol = llm_file(tmp_path, evol_server.base_url, "evol.yaml")
        optim = llm_file(tmp_path, optim_server.base_url, "optim.yaml")  # the probe passes, then every call is a 404
        return run_against(tmp_path, evol, "--optim-llm-config", optim, "--loop", "1", "--test-run", *flags)


def test_a_run_whose_optimizer_produced_nothing_says_so_and_fails(tmp_path):
    result = optimizer_failing_run(tmp_path)
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert_one_line_error(result, "no optimization happened", "--allow-no-optimization")
    assert result.returncode == 1
    outcome = run["optimization"]
    assert outcome["no_usable_candidate"] and outcome["usable_candidates"] == 0 and outcome["failed_analyses"] == 2
    assert "no optimization happened" in result.stdout and run["method_id"] == "e0"
    assert outcome["note"] in (out / "report.html").read_text(encoding="utf-8")


def test_allow_no_optimization_accepts_such_a_run(tmp_path):
    result = optimizer_failing_run(tmp_path, "--allow-no-optimization")
    assert result.returncode == 0, result.stderr
    assert "no optimization happened" in result.stdout and "error:" not in result.stderr


def test_a_lenient_config_takes_a_cut_answer_as_a_lenient_parse_also_from_the_cache(tmp_path):
    from failure_checks.rules import FailureRules
    from llm_access.client import AnswerCache
    from llm_tasks.evolution import evolve

    async def scenario():
        async with ChatServer(latency=0.001, answer=shaped_answer, shapes=ServerShapes(cut_share=1.0)) as server:
            config = fake_llm_config("evol", base_url=server.base_url, parse_mode="lenient")
            cache = AnswerCache(tmp_path / "cache.sqlite")
            outcomes = [await evolve(ChatLLM(config, cache=cache), "Make it harder.", "Name three rivers of Europe.",
                                     FailureRules.load(None)) for _ in range(2)]  # the second from the cache
            return outcomes, server.chat_requests

    (fresh, cached), requests = asyncio.run(scenario())
    assert requests == 1
    assert fresh.lenient and cached.lenient and fresh.raw == cached.raw
    assert fresh.failure is None or fresh.failure.reason != "truncated"


def test_a_cut_optimized_method_is_never_a_candidate(tmp_path):
    cut_optimizer = ServerShapes(cut_share=1.0, cut_only="<feedback>")  # only the optimizer's answers are cut
    with ServerThread(answer=shaped_answer) as evol_server, \
            ServerThread(answer=shaped_answer, shapes=cut_optimizer) as optim_server:
        evol = llm_file(tmp_path, evol_server.base_url, "evol.yaml")
        optim = llm_file(tmp_path, optim_server.base_url, "optim.yaml")
        result = run_against(tmp_path, evol, "--optim-llm-config", optim, "--loop", "1", "--test-run",
                             "--allow-no-optimization")
        cut = optim_server.reported["cut"]
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    candidates = run["history"][0]["candidates"]
    assert cut == len(candidates) == 2 and run["method_id"] == "e0"
    for candidate in candidates:
        assert candidate["status"] == "unusable" and candidate["text"] is None
        assert "max_tokens=256" in candidate["raw"] and "Optimized Method" not in candidate["raw"]
