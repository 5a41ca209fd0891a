"""Every way into the graph checks the save path and starts clean; a fatal error stops every LLM call.

The graph is driven the way `langgraph dev` drives it: the exported graph compiled with the server's
checkpointer, the settings in the input, no resources in the config, several runs on one thread, and
the event loop going on after a run fails. The endpoint is a loopback HTTP server (tests/chat_server.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from chat_server import ChatServer, shaped_answer
from conftest import REPO
from graph.workflow import build_graph
from llm_access.client import FatalLLMError
from user_errors import ConfigError

SEEDS_A = REPO / "data" / "sample_seed.jsonl"
SEEDS_B = REPO / "tests" / "data" / "alpaca_tasks.jsonl"


def llm_config(path: Path, base_url: str) -> str:
    path.write_text(f"preset: local\nembedded: false\nbase_url: {base_url}\nparse_mode: strict\nmax_tokens: 160\n"
                    "max_retries: 1\ntimeout: 5\nconcurrency: 4\n", encoding="utf-8")
    return str(path)


def studio_input(config: str, data: Path, save: Path, **changes) -> dict:
    return {"data_path": str(data), "save_path": str(save), "evol_llm_config": config, "optim_llm_config": config,
            "train_size": 2, "dev_size": 2, "batch_size": 2, "max_steps": 1, "candidate_size": 2, "loop": 1,
            "test_run": True, **changes}


def ids_in(path: Path) -> set[str]:
    return {json.loads(line)["root_id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def test_two_studio_runs_on_one_thread_are_checked_and_each_starts_clean(tmp_path):
    async def scenario():
        async with ChatServer(latency=0.001, answer=shaped_answer) as server:
            config = llm_config(tmp_path / "llm.yaml", server.base_url)
            graph = build_graph(checkpointer=InMemorySaver())
            thread = {"configurable": {"thread_id": "studio-thread"}, "recursion_limit": 10_000}
            data = tmp_path / "upload.jsonl"
            data.write_bytes(SEEDS_A.read_bytes())
            first = await graph.ainvoke(studio_input(config, data, tmp_path / "studio", max_steps=2, patience=5),
                                        thread)
            published = (tmp_path / "studio" / "dataset" / "README.md").read_bytes()
            # Other data under the same name into the same save path: refused, the first run's files untouched.
            data.write_bytes(SEEDS_B.read_bytes())
            with pytest.raises(ConfigError, match=r"changed since this run started \(60 rows then, 12 now\)"):
                await graph.ainvoke(studio_input(config, data, tmp_path / "studio", max_steps=2, patience=5), thread)
            with pytest.raises(ConfigError, match=r"other settings \(data_path changed\)"):
                await graph.ainvoke(studio_input(config, SEEDS_B, tmp_path / "studio", max_steps=2, patience=5),
                                    thread)
            assert (tmp_path / "studio" / "dataset" / "README.md").read_bytes() == published
            second = await graph.ainvoke(studio_input(config, SEEDS_B, tmp_path / "other"), thread)
            return first, second

    first, second = asyncio.run(scenario())
    assert first["step"] == 2 and len(first["history"]) == 2
    # The second run on the thread carries nothing of the first: its own step, history, scores and counts.
    assert second["step"] == 1 and [h["step"] for h in second["history"]] == [1]
    assert second["rows_in"] == 12 and set(second["level_counts"]) == {"0", "1"}
    assert second["e0_score"]["dev_size"] == 2 and second["history"][0]["incumbent"]["method_id"] == "e0"
    assert ids_in(tmp_path / "other" / "records.jsonl") <= {f"task_{i}" for i in range(12)}
    assert ids_in(tmp_path / "other" / "records.jsonl")
    assert set(second["phase_times"]) >= {"load"} and \
        second["phase_times"]["load"][0] >= first["phase_times"]["generation"][1] - 1e-6


class RevokedKey(ChatServer):
    """Answers well, then refuses every request with a 401 once `limit` answers were served."""

    def __init__(self, limit: int, **options):
        super().__init__(**options)
        self.limit, self.requests = limit, 0

    async def _answer(self, request_line, body):
        if b"/chat/completions" in request_line:
            self.requests += 1
            if self.served >= self.limit:
                return 401, [], {"error": {"message": "invalid api key", "type": "invalid_request_error"}}
        return await super()._answer(request_line, body)


# The key is revoked during the trajectories, during the candidates' validation, and inside a generation level.
@pytest.mark.parametrize("limit, max_steps", [(3, 1), (30, 1), (12, 0)])
def test_after_a_fatal_error_no_request_is_sent_while_the_server_goes_on(tmp_path, limit, max_steps):
    async def scenario():
        async with RevokedKey(limit, latency=0.05, answer=shaped_answer) as server:
            config = llm_config(tmp_path / "llm.yaml", server.base_url)
            graph = build_graph(checkpointer=InMemorySaver())
            thread = {"configurable": {"thread_id": "t"}, "recursion_limit": 10_000}
            run_input = studio_input(config, SEEDS_A, tmp_path / "out", train_size=8, dev_size=20, batch_size=8,
                                     candidate_size=4, loop=2, max_steps=max_steps, test_run=False,
                                     diversity="breadth", breadth_ratio=1.0)
            with pytest.raises(FatalLLMError):
                await graph.ainvoke(run_input, thread)
            at_failure = server.requests
            await asyncio.sleep(1.0)  # the loop lives on, as the dev server's does
            return at_failure, server.requests

    at_failure, later = asyncio.run(scenario())
    assert at_failure > 0 and later == at_failure
