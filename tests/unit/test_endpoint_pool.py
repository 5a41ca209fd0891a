"""The endpoint pool against real loopback servers: balance, failover, AIMD under 429s, the cache key."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat_server import ChatServer, answer_for
from conftest import fake_llm_config
from llm_access.client import AnswerCache, ChatLLM, FatalLLMError
from llm_access.config import LLMConfig
from llm_access.embedded_server import free_port
from llm_access.pool import SUCCESSES_PER_INCREASE, TokenBucket


def pool_config(endpoints: list[dict] | None = None, **changes) -> LLMConfig:
    """The fake config made a validated pool config (model_copy would skip validation)."""
    fields = fake_llm_config("evol").model_dump()
    fields.update(base_url=None, endpoints=endpoints, timeout=5.0, max_retries=2, parse_mode="strict", **changes)
    return LLMConfig(**fields)


async def ask_all(llm: ChatLLM, prompts: list[str]) -> list:
    return await asyncio.gather(*(llm.complete(p, role="respond") for p in prompts), return_exceptions=True)


def limits(endpoint: dict) -> list[int]:
    return [limit for _, limit in endpoint["limit_history"]]


def test_two_endpoints_get_work_in_proportion_to_their_limits():
    async def scenario():
        async with ChatServer(latency=0.02) as big, ChatServer(latency=0.02) as small:
            llm = ChatLLM(pool_config([{"base_url": big.base_url, "concurrency": 12},
                                       {"base_url": small.base_url, "concurrency": 4}]))
            prompts = [f"q{i}" for i in range(400)]
            started = time.monotonic()
            answers = await ask_all(llm, prompts)
            return answers, prompts, big, small, llm, time.monotonic() - started

    answers, prompts, big, small, llm, seconds = asyncio.run(scenario())
    assert [a.text for a in answers] == [answer_for(p) for p in prompts]
    share = big.served / (big.served + small.served)
    print(f"\n[balance] 400 calls in {seconds:.2f}s: big (cap 12) {big.served}, small (cap 4) {small.served}, "
          f"big's share {share:.2f} (limits say 0.75); peaks {big.peak}/{small.peak}")
    assert big.served + small.served == 400
    assert 0.65 <= share <= 0.85
    assert big.peak <= 12 and small.peak <= 4
    stats = {e["base_url"]: e for e in llm.pool.summary()}
    assert stats[big.base_url]["succeeded"] == big.served and stats[big.base_url]["latency_seconds"]["p50"] >= 0.02


def test_an_endpoint_killed_mid_run_loses_no_call():
    async def scenario():
        async with ChatServer(latency=0.03, kill_after=100) as dying, ChatServer(latency=0.03) as healthy:
            llm = ChatLLM(pool_config([{"base_url": dying.base_url, "concurrency": 8},
                                       {"base_url": healthy.base_url, "concurrency": 8}]))
            prompts = [f"q{i}" for i in range(600)]
            started = time.monotonic()
            answers = await ask_all(llm, prompts)
            return answers, prompts, dying, healthy, llm, time.monotonic() - started

    answers, prompts, dying, healthy, llm, seconds = asyncio.run(scenario())
    failures = [a for a in answers if isinstance(a, BaseException)]
    assert not failures, failures[:3]
    assert [a.text for a in answers] == [answer_for(p) for p in prompts]
    stats = {e["base_url"]: e for e in llm.pool.summary()}
    lost_in_flight = stats[dying.base_url]["errors"].get("connection_error", 0)
    print(f"\n[failover] 600 calls in {seconds:.2f}s: dying endpoint served {dying.served} then was killed "
          f"({lost_in_flight} requests in flight or probing failed, all rerouted), healthy served {healthy.served}")
    assert dying.killed and dying.served == 100 and healthy.served == 500
    assert lost_in_flight >= 1 and stats[dying.base_url]["down"]
    assert llm.usage["respond"].failed_calls == 0


def test_throttling_endpoint_sees_its_limit_fall_and_recover_with_no_call_lost():
    async def scenario():
        async with ChatServer(latency=0.02, capacity=6, retry_after="0.05") as server:
            llm = ChatLLM(pool_config([{"base_url": server.base_url, "concurrency": 16}]))
            first = [f"a{i}" for i in range(300)]
            answers = await ask_all(llm, first)
            lowest = min(limits(llm.pool.summary()[0]))
            throttled_then = server.throttled
            server.capacity = None  # the provider lifts its limit
            second = [f"b{i}" for i in range(600)]
            answers += await ask_all(llm, second)
            return answers, first + second, server, llm, lowest, throttled_then

    answers, prompts, server, llm, lowest, throttled_then = asyncio.run(scenario())
    failures = [a for a in answers if isinstance(a, BaseException)]
    assert not failures, failures[:3]
    assert [a.text for a in answers] == [answer_for(p) for p in prompts]
    endpoint = llm.pool.summary()[0]
    history = limits(endpoint)
    print(f"\n[aimd] server capacity 6, client cap 16: {throttled_then} answers were 429, limit fell to {lowest}; "
          f"capacity lifted: limit back to {endpoint['limit']}; {len(history)} history points, "
          f"first ones {history[:8]}, requests sent {endpoint['requests']} for {len(prompts)} calls")
    assert throttled_then > 0 and lowest <= 6
    assert endpoint["limit"] == 16 and history[-1] == 16
    assert endpoint["errors"] == {"http_429": throttled_then}
    assert llm.usage["respond"].failed_calls == 0 and server.served == len(prompts)


def test_every_endpoint_dead_ends_the_run_with_one_line_naming_the_urls():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    llm = ChatLLM(pool_config([{"base_url": url} for url in urls]))
    started = time.monotonic()
    outcomes = asyncio.run(ask_all(llm, [f"q{i}" for i in range(50)]))
    seconds = time.monotonic() - started
    print(f"\n[all dead] 50 calls ended in {seconds:.2f}s: {outcomes[0]}")
    assert all(isinstance(o, FatalLLMError) for o in outcomes)
    message = str(outcomes[0])
    assert "\n" not in message and all(url in message for url in urls) and "cannot reach" in message
    assert seconds < 8


def test_cache_key_does_not_depend_on_which_endpoint_answered_but_two_pools_do_not_share(tmp_path):
    prompts = [f"q{i}" for i in range(40)]

    async def scenario(cache: AnswerCache):
        async with ChatServer(latency=0.01) as one, ChatServer(latency=0.01) as two, ChatServer(latency=0.01) as three:
            def served():
                return one.served + two.served + three.served

            def pool_of(*servers):
                return ChatLLM(pool_config([{"base_url": s.base_url, "concurrency": 4} for s in servers]), cache=cache)

            first = await ask_all(pool_of(one, two), prompts)
            split = (one.served, two.served)
            again = await ask_all(pool_of(two, one), prompts)  # the same pool, listed the other way round
            after_same = served()
            other = await ask_all(pool_of(one, three), prompts)  # another pool
            return first, split, again, after_same, other, served()

    first, split, again, after_same, other, after_other = asyncio.run(scenario(AnswerCache(tmp_path / "cache.sqlite")))
    print(f"\n[cache] first pass served {split}; the same pool again {after_same - sum(split)}; "
          f"another pool {after_other - after_same}")
    assert split[0] > 0 and split[1] > 0
    assert after_same == sum(split) and all(a.cached for a in again)
    assert [a.text for a in again] == [a.text for a in first]
    assert after_other - after_same == len(prompts) and not any(a.cached for a in other)


def test_cache_key_names_the_endpoint_pool_and_parse_mode():
    keyed = [ChatLLM(fake_llm_config("evol", base_url=url)).cache_key([], 0) for url in ("http://a/v1", "http://b/v1")]
    pooled = [ChatLLM(pool_config([{"base_url": a}, {"base_url": b}])).cache_key([], 0)
              for a, b in (("http://a/v1", "http://b/v1"), ("http://c/v1", "http://d/v1"), ("http://b/v1", "http://a/v1"))]
    modes = [ChatLLM(fake_llm_config("evol", parse_mode=mode)).cache_key([], 0) for mode in ("strict", "lenient")]
    assert keyed[0] != keyed[1]
    assert pooled[0] != pooled[1] and pooled[0] == pooled[2]
    assert modes[0] != modes[1]


def test_token_bucket_waits_out_its_debt_and_takes_corrections():
    bucket = TokenBucket(rate_per_second=100, burst=100)
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5, abs=0.02)
    bucket.charge(-50)  # the answer used 50 fewer tokens than estimated
    assert bucket.reserve(10) == pytest.approx(0.1, abs=0.02)


def test_tokens_per_minute_counts_the_real_usage_not_only_the_estimate():
    async def scenario():
        # Each answer reports ~1 prompt + 100 completion tokens; the estimate before the call sees only the prompt.
        async with ChatServer(latency=0.005, completion_tokens=100) as server:
            llm = ChatLLM(pool_config([{"base_url": server.base_url, "concurrency": 8}], tokens_per_minute=5800))
            await ask_all(llm, [f"q{i}" for i in range(60)])  # ~6,100 real tokens, ~180 estimated
            started = time.monotonic()
            answers = await ask_all(llm, [f"later{i}" for i in range(5)])
            return answers, time.monotonic() - started

    # The bucket (5,800 a minute, ~97 a second) is ~300 tokens in debt once the real counts are charged.
    answers, seconds = asyncio.run(scenario())
    print(f"\n[tokens/min] after 60 calls of ~101 tokens under 5,800 tokens/min, 5 more calls waited {seconds:.2f}s")
    assert all(a.text for a in answers) and seconds >= 1.5


def test_config_shapes_normalise_to_endpoints_and_bad_ones_are_one_line(tmp_path):
    from llm_access.config import load_llm_config
    from user_errors import ConfigError

    listed = tmp_path / "listed.yaml"
    listed.write_text("preset: openai\nbase_url: [http://a/v1, http://b/v1]\nconcurrency: 5\n")
    config = load_llm_config(str(listed), "evol")
    assert [(e.base_url, e.concurrency, e.api_key_env) for e in config.endpoint_list()] == [
        ("http://a/v1", 5, "OPENAI_API_KEY"), ("http://b/v1", 5, "OPENAI_API_KEY")]
    rich = tmp_path / "rich.yaml"
    rich.write_text("preset: openai\nendpoints:\n  - {base_url: http://a/v1, concurrency: 32, weight: 2}\n"
                    "  - {base_url: http://b/v1, api_key_env: SECOND_KEY}\n")
    config = load_llm_config(str(rich), "evol")
    assert [(e.concurrency, e.weight, e.api_key_env) for e in config.endpoint_list()] == [
        (32, 2.0, "OPENAI_API_KEY"), (16, 1.0, "SECOND_KEY")]
    assert config.total_concurrency() == 48
    # A one-endpoint config dumps as before pools existed, so an older run's settings.json still matches on resume.
    assert not {"endpoints", "tokens_per_minute"} & set(fake_llm_config("evol").model_dump(mode="json"))
    for body, words in [("base_url: []\n", "empty"), ("base_url: [http://a, http://a]\n", "twice"),
                        ("base_url: http://a\nendpoints: [{base_url: http://b}]\n", "not both"),
                        ("endpoints: [{url: http://b}]\n", "endpoints.0.url"),
                        ("endpoints: [{base_url: http://b, concurrency: 0}]\n", "endpoints.0.concurrency")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: m\n" + body)
        with pytest.raises(ConfigError) as error:
            load_llm_config(str(bad), "evol")
        assert "\n" not in str(error.value) and words in str(error.value) and "bad.yaml" in str(error.value)
