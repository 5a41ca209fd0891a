"""Resume after a crash: the same command continues, and the files match an uninterrupted run."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder
from llm_access.client import FatalLLMError


class CrashAfter:
    """Answers like the default world, then fails with a 401 at call `limit` (the run ends there)."""

    def __init__(self, limit: int, every_call: bool = False):
        # every_call: from call `limit` on every call fails, so no concurrent call gets an answer either
        self.limit, self.count, self.every_call = limit, 0, every_call

    def __call__(self, prompt, seed):
        self.count += 1
        if self.count == self.limit or (self.every_call and self.count > self.limit):
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

    # Items stream, so lines land in the order answers come back: compare the lines, not their order.
    for name in ("records.jsonl", "failures.jsonl", "method.txt"):
        ours = (tmp_path / "crash" / "out" / name).read_text(encoding="utf-8").splitlines()
        theirs = (tmp_path / "ref" / "out" / name).read_text(encoding="utf-8").splitlines()
        assert sorted(ours) == sorted(theirs), name
    written = [(item["id"], item["level"]) for name in ("records.jsonl", "failures.jsonl")
               for item in map(json.loads, (tmp_path / "crash" / "out" / name).read_text(encoding="utf-8").splitlines())]
    assert len(written) == len(set(written))  # none written twice
    assert values["step"] == 2
    # Answers finished before the crash come from the cache: at most the calls in
    # flight at the crash (concurrency 4) are asked again.
    answered_before_crash = crash_at - 1
    assert len(resumed.calls) <= len(reference_model.calls) - answered_before_crash + 4


def test_changed_settings_in_the_same_directory_are_refused_unless_overwrite(tmp_path):
    from user_errors import ConfigError
    from run import prepare_directory

    prepare_directory(make_settings(tmp_path, loop=2), overwrite=False)
    (tmp_path / "out" / "records.jsonl").write_text('{"id": "x", "level": 1}\n')
    with pytest.raises(ConfigError, match="loop changed") as error:
        prepare_directory(make_settings(tmp_path, loop=3), overwrite=False)
    assert "--overwrite" in str(error.value) and "\n" not in str(error.value)
    prepare_directory(make_settings(tmp_path, loop=3), overwrite=True)
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_a_finished_run_asked_again_makes_no_llm_call(tmp_path):
    settings = make_settings(tmp_path, max_steps=1, loop=1, test_run=True)
    run_workflow(settings, ScriptedChatModel())
    again = ScriptedChatModel()
    run_workflow(settings, again)
    assert again.calls == []


def test_a_new_run_with_a_shared_cache_reuses_every_answer(tmp_path):
    import asyncio

    from run import execute, prepare_directory

    cache = str(tmp_path / "shared_cache.sqlite")
    first, second = ScriptedChatModel(), ScriptedChatModel()
    for model, directory in ((first, "a"), (second, "b")):
        settings = make_settings(tmp_path / directory, max_steps=1, loop=1, test_run=True)
        prepare_directory(settings, overwrite=False)
        asyncio.run(execute(settings, cache=cache, models={"evol": model, "optim": model}, quiet=True))
    assert first.calls and second.calls == []
    records = [sorted((tmp_path / d / "out" / "records.jsonl").read_text().splitlines()) for d in ("a", "b")]
    assert records[0] == records[1]
