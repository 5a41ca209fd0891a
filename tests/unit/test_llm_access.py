"""The LLM facade with fake chat models: think stripping, usage, retries, cache, concurrency cap."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from conftest import fake_llm_config
from fakes import ScriptedChatModel
from llm_access.client import AnswerCache, ChatLLM, FatalLLMError, LLMCallFailed, build_chat_model


def _status_error(status: int, headers: dict | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    cls = {401: openai.AuthenticationError, 429: openai.RateLimitError, 400: openai.BadRequestError}.get(
        status, openai.InternalServerError)
    return cls("failed", response=response, body=None)


class FlakyModel(BaseChatModel):
    """Raises the queued errors first, then answers; counts requests and peak parallelism."""

    errors: list = []
    answer: str = "fine"
    requests: int = 0
    in_flight: int = 0
    peak: int = 0

    @property
    def _llm_type(self) -> str:
        return "flaky"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        raise NotImplementedError

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.errors:
                raise self.errors.pop(0)
            message = AIMessage(content=self.answer, usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5})
            return ChatResult(generations=[ChatGeneration(message=message)])
        finally:
            self.in_flight -= 1


def _llm(model, **changes) -> ChatLLM:
    return ChatLLM(fake_llm_config("evol", max_retries=2, **changes), model=model)


def test_build_chat_model_sends_max_tokens_in_the_body_and_uses_chat_completions():
    model = build_chat_model(fake_llm_config("evol", max_tokens=77, extra_body={"top_k": 5}))
    assert model.extra_body == {"max_tokens": 77, "top_k": 5}
    assert model.use_responses_api is False and model.max_retries == 0


def test_think_blocks_are_stripped_and_usage_counted():
    model = ScriptedChatModel(responder=lambda prompt, seed: "<think>hmm\nlong</think>\nParis.")
    llm = _llm(model)
    completion = asyncio.run(llm.complete("capital?", role="respond"))
    assert completion.text == "Paris." and completion.output_tokens > 0
    assert llm.usage["respond"].calls == 1 and llm.usage["respond"].input_tokens == completion.input_tokens


def test_throttling_rests_the_endpoint_for_retry_after_and_cuts_its_limit():
    import time

    model = FlakyModel(errors=[_status_error(429, {"retry-after": "0.3"}), _status_error(503, {"retry-after": "0.2"})])
    llm = _llm(model)  # concurrency 4, max_retries 2
    started = time.monotonic()
    completion = asyncio.run(llm.complete("hi", role="respond"))
    elapsed = time.monotonic() - started
    assert completion.text == "fine" and model.requests == 3 and elapsed >= 0.5
    endpoint = llm.pool.summary()[0]
    # Each throttled answer came from a request sent after the previous cut, so each cut: 4 -> 3 -> 2.
    assert [limit for _, limit in endpoint["limit_history"]] == [4, 3, 2]
    assert endpoint["errors"] == {"http_429": 1, "http_503": 1} and endpoint["succeeded"] == 1


def test_server_errors_are_retried_honouring_retry_after(monkeypatch):
    sleeps = []
    monkeypatch.setattr(asyncio, "sleep", _recording_sleep(sleeps))
    model = FlakyModel(errors=[_status_error(500, {"retry-after": "7"})])
    completion = asyncio.run(_llm(model).complete("hi", role="respond"))
    assert completion.text == "fine" and model.requests == 2
    assert 7.0 in sleeps  # the backoff took Retry-After as given


def test_final_errors_are_not_retried():
    model = FlakyModel(errors=[_status_error(400)])
    with pytest.raises(LLMCallFailed) as error:
        asyncio.run(_llm(model).complete("hi", role="respond"))
    assert error.value.reason == "http_400" and model.requests == 1


def test_bad_key_ends_the_run_naming_the_variable():
    model = FlakyModel(errors=[_status_error(401)])
    llm = ChatLLM(fake_llm_config("evol", api_key_env="MY_KEY_VAR"), model=model)
    with pytest.raises(FatalLLMError, match="MY_KEY_VAR"):
        asyncio.run(llm.complete("hi", role="respond"))
    assert model.requests == 1


def test_spent_retries_become_a_failure_with_a_reason(monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _recording_sleep([]))
    model = FlakyModel(errors=[_status_error(500) for _ in range(5)])
    with pytest.raises(LLMCallFailed) as error:
        asyncio.run(_llm(model).complete("hi", role="respond"))
    assert error.value.reason == "http_500" and model.requests == 3  # 1 + max_retries


def test_unacceptable_answers_are_re_asked_with_a_new_seed():
    seeds = []

    def responder(prompt, seed):
        seeds.append(seed)
        return "no marker" if len(seeds) < 2 else "#Finally Rewritten Instruction#\nok"

    llm = _llm(ScriptedChatModel(responder=responder))
    completion = asyncio.run(llm.complete("x", role="evolve", accept=lambda t: "#Finally" in t))
    assert completion.text.endswith("ok") and len(set(seeds)) == 2


def test_concurrency_is_capped_by_the_config():
    model = FlakyModel()
    llm = _llm(model, concurrency=3)

    async def many():
        await asyncio.gather(*(llm.complete(f"q{i}", role="respond") for i in range(12)))

    asyncio.run(many())
    assert model.requests == 12 and model.peak == 3


def test_cache_answers_repeat_calls_but_keeps_samples_apart(tmp_path):
    model = ScriptedChatModel(responder=lambda prompt, seed: f"answer for seed {seed}")
    cache = AnswerCache(tmp_path / "cache.sqlite")
    llm = ChatLLM(fake_llm_config("optim"), model=model, cache=cache)

    async def ask():
        return [await llm.complete("same prompt", role="optimize", sample_index=i) for i in (0, 1, 0, 1)]

    answers = asyncio.run(ask())
    assert len(model.calls) == 2
    assert answers[0].text == answers[2].text != answers[1].text == answers[3].text
    assert answers[2].cached and llm.usage["optimize"].cached_calls == 2


def _recording_sleep(log: list):
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds, *args):
        log.append(seconds)
        await real_sleep(0)

    return fake_sleep


def test_tokens_of_rejected_answers_are_counted():
    llm = _llm(ScriptedChatModel(responder=lambda prompt, seed: "no marker here, ever"))
    with pytest.raises(LLMCallFailed):
        asyncio.run(llm.complete("x", role="evolve", accept=lambda text: False))
    usage = llm.usage["evolve"]
    assert usage.requests == 3 and usage.failed_calls == 1 and usage.output_tokens == 3 * (len("no marker here, ever") // 4)


def test_requests_per_second_spaces_out_request_starts():
    import time

    model = FlakyModel()
    llm = _llm(model, concurrency=8, requests_per_second=20.0)

    async def many():
        started = time.monotonic()
        await asyncio.gather(*(llm.complete(f"q{i}", role="respond") for i in range(6)))
        return time.monotonic() - started

    # Six starts at 20 per second need at least five gaps of 50 ms, however fast the endpoint.
    assert asyncio.run(many()) >= 0.25 and model.requests == 6
