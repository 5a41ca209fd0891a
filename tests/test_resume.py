"""Resume after a crash: the same command continues, and the files match an uninterrupted run."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder
from llm_access import FatalLLMError


class CrashAfter:
    """Answers like the default world, then fails with a 401 at call `limit` (the run ends there)."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    def __call__(self, prompt, seed):
        self.count += 1
        if self.count == self.limit:
            request = httpx.Request("POST", "http://fake/v1/chat/completions")
            raise openai.AuthenticationError("key revoked", response=httpx.Response(401, request=request), body=None)
        return default_responder(prompt, seed)


@pytest.mark.parametrize("crash_at", [5, 40, 120])
def test_a_crashed_run_resumes_to_the_same_files(tmp_path, crash_at):
    fields = dict(max_steps=2, patience=5, loop=2, batch_size=2)
    reference = make_settings(tmp_path / "ref", **fields)
    reference_model = ScriptedChatModel()
    run_workflow(reference, reference_model)

    settings = make_settings(tmp_path / "crash", **fields)
    crashing = ScriptedChatModel(responder=CrashAfter(crash_at))
    with pytest.raises(FatalLLMError):
        run_workflow(settings, crashing)
    resumed = ScriptedChatModel()
    values = run_workflow(settings, resumed)

    for name in ("records.jsonl", "failures.jsonl", "method.txt"):
        ours = (tmp_path / "crash" / "out" / name).read_text(encoding="utf-8")
        theirs = (tmp_path / "ref" / "out" / name).read_text(encoding="utf-8")
        assert ours == theirs, name
    assert values["step"] == 2
    # Answers finished before the crash come from the cache: at most the calls in
    # flight at the crash (concurrency 4) are asked again.
    answered_before_crash = crash_at - 1
    assert len(resumed.calls) <= len(reference_model.calls) - answered_before_crash + 4
