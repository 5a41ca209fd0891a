"""The one way this tool talks to an LLM.

`ChatLLM` sends an `LLMConfig`'s requests through a pool of `ChatOpenAI` clients, one
per endpoint (llm_access.pool: least-loaded choice, concurrency that adapts to
throttling, failover), and adds what a long data run needs: optional rate and token
limits, retries that tell transient from final errors, reasoning kept apart from the
answer in each of its shapes, cut answers (`finish_reason: length`) refused (a lenient
config takes them leniently), token accounting per role (reasoning and cached input
apart), a circuit breaker that ends the run when the same wrong-config failure
repeats, and an answer cache keyed by
everything that changes an answer or its acceptance (the endpoint or the pool's set of
endpoints, model, params, parse mode, messages, sample index).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, messages_to_dict
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from failure_checks.markers import strip_think
from llm_access.config import EndpointConfig, LLMConfig
from llm_access.pool import Endpoint, EndpointPool, Lease, PoolExhausted, TokenBucket

FINAL_STATUS = {400, 401, 403, 404, 422}
BREAKER_WINDOW = 20
"""The first calls of a role the breaker looks at: when more than half of them end with the same
systematic reason, the config is wrong, not the data."""
BREAKER_STREAK = 10
"""Calls of a role in a row ending with the same systematic reason that end the run at any point
(an endpoint that breaks mid-run); at a 10% rate of one reason, ten in a row is a 1e-10 chance."""
THROTTLE_STATUS = {429, 503}
MAX_HANDOFFS = 20
"""Times one request may be handed on (throttled, or its endpoint unreachable) before it fails; these
do not spend its retries."""


class LLMCallFailed(RuntimeError):
    """One call could not be completed; the item becomes a failure with this reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FatalLLMError(RuntimeError):
    """The endpoint cannot serve this run at all (bad key, unreachable); ends the run."""


class SystematicFailure(FatalLLMError):
    """The same non-transient failure keeps repeating for a role: a wrong config, so the run ends."""


class BudgetReached(FatalLLMError):
    """The token budget is spent; the run stops where a resume can pick it up."""


@dataclass
class TokenBudget:
    """Tokens a run may spend in all, earlier invocations included."""

    limit: int | None
    used: int = 0

    def check(self) -> None:
        if self.limit is not None and self.used >= self.limit:
            raise BudgetReached(
                f"the token budget of {self.limit} is spent ({self.used} used): the run stopped and can be resumed "
                "with the same command and a larger --max-budget-tokens")


@dataclass(frozen=True)
class Completion:
    """What one call returned, its reasoning apart from its answer."""

    text: str
    """The answer's content, without any reasoning."""
    input_tokens: int
    """Prompt tokens reported by the endpoint (0 when cached)."""
    output_tokens: int
    """Completion tokens reported by the endpoint, reasoning included (0 when cached)."""
    cached: bool = False
    """True when the answer came from the cache, with no request made."""
    reasoning: str = ""
    """The model's reasoning (a reasoning field or <think> text), never part of `text`."""
    reasoning_tokens: int = 0
    """Of output_tokens, those the endpoint reports as reasoning."""
    cached_input_tokens: int = 0
    """Of input_tokens, those the endpoint reports as served from its prompt cache."""
    finish_reason: str | None = None
    """"length" when the answer was cut at max_tokens."""


@dataclass
class RoleUsage:
    """Token and call counters of one role (evolve, analyze, optimize, respond)."""

    calls: int = 0
    """Logical calls, answered or not."""
    cached_calls: int = 0
    """Calls answered from the cache, with no request."""
    failed_calls: int = 0
    """Calls that ended as a failure after their retries."""
    requests: int = 0
    """HTTP requests sent, retries included."""
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    """Of output_tokens, those reported as reasoning."""
    cached_input_tokens: int = 0
    """Of input_tokens, those reported as prompt-cache hits (0 where the endpoint reports none)."""


class AnswerCache:
    """SQLite store of answers; lets a re-run or a resumed run skip paid calls."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        # WAL without a sync per commit: an answer survives a crash of this process, and a
        # put costs microseconds instead of a disk flush.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
        for column in ("reasoning", "finish_reason"):  # a cache written before they were kept
            if column not in columns:
                self._db.execute(f"ALTER TABLE answers ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        self._db.commit()

    def get(self, key: str) -> str | None:
        hit = self.get_completion(key)
        return hit[0] if hit else None

    def get_completion(self, key: str) -> tuple[str, str, str] | None:
        """(answer, reasoning, finish reason) stored under `key`, or None."""
        row = self._db.execute("SELECT text, reasoning, finish_reason FROM answers WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def put(self, key: str, text: str, reasoning: str = "", finish_reason: str | None = None) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers (key, text, reasoning, finish_reason) VALUES (?, ?, ?, ?)",
                         (key, text, reasoning, finish_reason or ""))
        self._db.commit()

    def close(self) -> None:
        self._db.close()


CONNECTIONS_PER_CLIENT = 32
"""httpcore scans every connection of a pool on each request: at 256 in flight one pool cost
more CPU than the rest of the run (12 ms per request), so an endpoint gets one client per 32."""


class ChatCompletionsModel(ChatOpenAI):
    """ChatOpenAI that keeps what it drops: a message's `reasoning_content` / `reasoning` field and the
    response's raw `usage` (DeepSeek's cache fields are in no langchain usage shape).

    Both go where a langchain message has room for them: the reasoning in
    `additional_kwargs["reasoning_content"]` (where langchain-deepseek puts it), the usage in
    `response_metadata["raw_usage"]`. langchain-openai 1.7 builds the message in `_create_chat_result`
    from the response it parsed; reading the same response here costs no second parse of the body.
    """

    def _create_chat_result(self, response, generation_info=None):
        result = super()._create_chat_result(response, generation_info)
        raw = response if isinstance(response, dict) else response.model_dump(warnings=False)
        for generation, choice in zip(result.generations, raw.get("choices") or []):
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                generation.message.additional_kwargs["reasoning_content"] = reasoning
            generation.message.response_metadata["raw_usage"] = raw.get("usage") or {}
        return result


def build_chat_model(config: LLMConfig, endpoint: EndpointConfig | None = None,
                     connections: int | None = None) -> BaseChatModel:
    """A ChatOpenAI for one endpoint of this config (the first by default); retries are ours, so the client's are off."""
    endpoint = endpoint or config.endpoint_list()[0]
    connections = connections or endpoint.concurrency or 1
    return ChatCompletionsModel(
        model=config.model,
        base_url=endpoint.base_url,
        api_key=SecretStr(config.api_key(endpoint.api_key_env)),
        temperature=config.temperature,
        top_p=config.top_p,
        timeout=config.timeout,
        max_retries=0,
        use_responses_api=False,
        # Our own client: langchain-openai's shared default is bound to the first event
        # loop that used it, and its pool should match this endpoint's concurrency.
        http_async_client=httpx.AsyncClient(
            timeout=config.timeout, limits=httpx.Limits(max_connections=connections + 2)),
        # llama_cpp.server ignores max_completion_tokens, which is what langchain sends.
        extra_body={"max_tokens": config.max_tokens, **config.extra_body},
    )


_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)
_THINK_INSIDE = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)


def split_reasoning(content: str, reasoning_field: str = "") -> tuple[str, str]:
    """(answer, reasoning) of one message: a reasoning field, or <think> text inside the content.

    The answer is what `strip_think` keeps (closed blocks, a lone closing tag, an unclosed opening
    tag); the reasoning is the rest of the content without its tags.
    """
    answer = strip_think(content)
    thought = content
    if answer and answer in content:
        head, _, tail = content.rpartition(answer)
        thought = head + tail
    elif answer:  # closed blocks inside the answer: their text is the reasoning
        thought = "\n".join(_THINK_INSIDE.findall(content))
    thought = _THINK_TAG.sub("", thought).strip()
    return answer, "\n\n".join(part for part in (reasoning_field.strip(), thought) if part)


def _number(table: Any, *path: str) -> int:
    for name in path:
        table = table.get(name) if isinstance(table, dict) else None
    return table if isinstance(table, int) else 0


def token_counts(raw_usage: dict, usage_metadata: dict) -> tuple[int, int, int, int]:
    """(input, output, reasoning, cached input) tokens of one answer.

    From the response's own usage where the model kept it (OpenAI's `prompt_tokens_details.cached_tokens`,
    DeepSeek's `prompt_cache_hit_tokens`, `completion_tokens_details.reasoning_tokens`), else from
    langchain's usage_metadata; a count nobody reports is 0, never a guess.
    """
    details_in = usage_metadata.get("input_token_details") or {}
    details_out = usage_metadata.get("output_token_details") or {}
    input_tokens = _number(raw_usage, "prompt_tokens") or usage_metadata.get("input_tokens", 0)
    output_tokens = _number(raw_usage, "completion_tokens") or usage_metadata.get("output_tokens", 0)
    reasoning = (_number(raw_usage, "completion_tokens_details", "reasoning_tokens")
                 or details_out.get("reasoning", 0) or 0)
    cached = (_number(raw_usage, "prompt_cache_hit_tokens") or _number(raw_usage, "prompt_tokens_details", "cached_tokens")
              or details_in.get("cache_read", 0) or 0)
    return input_tokens, output_tokens, reasoning, cached


def completion_of(message: BaseMessage) -> Completion:
    """The answer, reasoning, finish reason and token counts of one chat message."""
    content = message.content if isinstance(message.content, str) else str(message.content)
    field_reasoning = message.additional_kwargs.get("reasoning_content") or ""
    text, reasoning = split_reasoning(content, field_reasoning if isinstance(field_reasoning, str) else "")
    metadata = message.response_metadata or {}
    input_tokens, output_tokens, reasoning_tokens, cached = token_counts(
        metadata.get("raw_usage") or {}, getattr(message, "usage_metadata", None) or {})
    return Completion(text, input_tokens, output_tokens, reasoning=reasoning, reasoning_tokens=reasoning_tokens,
                      cached_input_tokens=cached, finish_reason=metadata.get("finish_reason"))


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify_error(exc: Exception) -> tuple[str, bool]:
    """(reason, retryable) for an exception raised by one request."""
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException, asyncio.TimeoutError)):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error", True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return f"http_{status}", status not in FINAL_STATUS
    if isinstance(exc, json.JSONDecodeError):
        return "malformed_response", True
    return f"error_{type(exc).__name__}", False


def build_pool(config: LLMConfig, model: BaseChatModel | None = None) -> EndpointPool:
    """One endpoint per configured URL; `model`, when given, answers for every one of them."""
    endpoints = []
    for e in config.endpoint_list():
        cap = e.concurrency or 1
        clients = -(-cap // CONNECTIONS_PER_CLIENT)
        models = [model] if model else [build_chat_model(config, e, -(-cap // clients)) for _ in range(clients)]
        endpoints.append(Endpoint(url=e.base_url, models=models, cap=cap, weight=e.weight))
    return EndpointPool(endpoints, max_strikes=config.max_retries + 1)


SYSTEMATIC_REASONS = ("truncated", "malformed_response")
"""Besides an HTTP 4xx other than 429: reasons that say the config or the endpoint is wrong, not the item."""


def is_systematic(reason: str) -> bool:
    if reason.startswith("http_4"):
        return reason != "http_429"
    return reason in SYSTEMATIC_REASONS or reason.startswith("error_")


@dataclass
class CircuitBreaker:
    """Ends the run when one role's calls keep failing for the same systematic reason.

    Trips when more than half of the role's first BREAKER_WINDOW calls end with one such reason (so a
    wrong config costs at most about a dozen calls), or when BREAKER_STREAK calls in a row do at any
    later point. Calls are counted as they end; answers from the cache count as successes.
    """

    config: LLMConfig
    ended: int = 0
    first: Counter = field(default_factory=Counter)
    """Systematic reasons among the first BREAKER_WINDOW ended calls."""
    streak_reason: str = ""
    streak: int = 0
    detail: str = ""
    """The latest systematic failure's detail, for the message."""

    def outcome(self, role: str, reason: str | None, detail: str = "") -> None:
        """Count one ended call (reason None: it succeeded); raises SystematicFailure when the breaker trips."""
        self.ended += 1
        if reason is None or not is_systematic(reason):
            self.streak, self.streak_reason = 0, ""
            return
        self.detail = detail
        self.streak, self.streak_reason = (self.streak + 1, reason) if reason == self.streak_reason else (1, reason)
        if self.ended <= BREAKER_WINDOW:
            self.first[reason] += 1
            if self.first[reason] > BREAKER_WINDOW // 2:
                raise SystematicFailure(self.message(role, reason, f"{self.first[reason]} of the first {self.ended} answers"))
        if self.streak >= BREAKER_STREAK:
            raise SystematicFailure(self.message(role, reason, f"{self.streak} answers in a row"))

    def message(self, role: str, reason: str, how_many: str) -> str:
        c = self.config
        if reason == "truncated":
            return (f"{role}: {how_many} were cut at max_tokens={c.max_tokens} (finish_reason length): "
                    f"raise max_tokens in the LLM config '{c.name}'"
                    + ("" if c.reasoning else ", or set reasoning: true for a thinking model"))
        status = reason.removeprefix("http_")
        hint = {"400": "the server refuses the request: check model and extra_body",
                "401": "the key is refused: check api_key_env", "403": "the key may not use this model",
                "404": "check base_url (most servers want it to end in /v1) and model",
                "422": "the server refuses the request body: check extra_body"}.get(status, "check the LLM config")
        what = f"failed with HTTP {status}" if status.isdigit() else f"failed ({reason})"
        return f"{role}: {how_many} {what} ({self.detail[:120]}): {hint} in the LLM config '{c.name}' ({self.config_urls()})"

    def config_urls(self) -> str:
        return ", ".join(e.base_url for e in self.config.endpoint_list())


class ChatLLM:
    """A capped, retrying, caching, token-counting client for one config's endpoints."""

    def __init__(self, config: LLMConfig, model: BaseChatModel | None = None, cache: AnswerCache | None = None,
                 budget: TokenBudget | None = None):
        self.config = config
        self.pool = build_pool(config, model)
        self.cache = cache
        self.budget = budget or TokenBudget(None)
        self.usage: dict[str, RoleUsage] = defaultdict(RoleUsage)
        self.in_flight = 0
        """Requests sent and not yet answered, for progress."""
        self.usage_journal: Callable[[RoleUsage, dict[str, int]], None] | None = None
        """Told of usage as it accrues (a request before it is sent, tokens once answered), so that a killed run keeps it."""
        self._request_rate = TokenBucket(config.requests_per_second, 1) if config.requests_per_second else None
        self._token_rate = (TokenBucket(config.tokens_per_minute / 60, config.tokens_per_minute)
                            if config.tokens_per_minute else None)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._tripped: SystematicFailure | None = None

    def cache_key(self, messages: list[BaseMessage], sample_index: int) -> str:
        """Everything that changes an answer or whether it is accepted: the endpoint (the set of a pool's
        URLs, whichever answered), model, sampling, max_tokens, extra_body, seed, parse mode, messages and
        sample index."""
        c = self.config
        # The embedded server's port changes per run; its identity is the model.
        urls = sorted(e.base_url for e in c.endpoint_list())
        endpoint = "embedded" if c.embedded else urls[0] if len(urls) == 1 else urls
        payload = [endpoint, c.model, c.temperature, c.top_p, c.max_tokens, c.extra_body, c.seed, c.parse_mode,
                   messages_to_dict(messages), sample_index]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    async def complete(
        self, prompt: str | list[BaseMessage], *, role: str, sample_index: int = 0,
        accept: Callable[[str], bool] | None = None,
    ) -> Completion:
        """Answer `prompt`; `accept` rejects an unusable answer, which is re-asked.

        Raises LLMCallFailed when retries are spent (reason `truncated` for an answer cut at
        max_tokens), FatalLLMError when the endpoint cannot serve the run (bad key, unreachable,
        or a systematic failure the circuit breaker caught).
        """
        if self._tripped:
            raise self._tripped
        messages = [HumanMessage(prompt)] if isinstance(prompt, str) else prompt
        key = self.cache_key(messages, sample_index)
        usage = self.usage[role]
        usage.calls += 1
        if self.cache and (hit := self.cache.get_completion(key)) is not None:
            usage.cached_calls += 1
            self._count_outcome(role, None)
            return Completion(hit[0], 0, 0, cached=True, reasoning=hit[1], finish_reason=hit[2] or None)
        self.budget.check()
        try:
            completion = await self._complete_with_retries(messages, sample_index, accept, usage)
        except LLMCallFailed as exc:
            usage.failed_calls += 1
            self._count_outcome(role, exc.reason, exc.detail)
            raise
        self._count_outcome(role, None)
        if self.cache:
            self.cache.put(key, completion.text, completion.reasoning, completion.finish_reason)
        return completion

    def _count_outcome(self, role: str, reason: str | None, detail: str = "") -> None:
        breaker = self._breakers.setdefault(role, CircuitBreaker(self.config))
        try:
            breaker.outcome(role, reason, detail)
        except SystematicFailure as exc:
            self._tripped = self._tripped or exc
            raise self._tripped from None

    async def _complete_with_retries(self, messages, sample_index, accept, usage: RoleUsage) -> Completion:
        last_reason, last_detail = "error", ""
        for attempt in range(self.config.max_retries + 1):
            try:
                completion = await self._request(messages, sample_index, attempt, usage)
                # Every answer costs tokens, the rejected ones too.
                usage.input_tokens += completion.input_tokens
                usage.output_tokens += completion.output_tokens
                usage.reasoning_tokens += completion.reasoning_tokens
                usage.cached_input_tokens += completion.cached_input_tokens
                self.budget.used += completion.input_tokens + completion.output_tokens
                if self.usage_journal:
                    self.usage_journal(usage, {"input_tokens": completion.input_tokens,
                                               "output_tokens": completion.output_tokens,
                                               "reasoning_tokens": completion.reasoning_tokens,
                                               "cached_input_tokens": completion.cached_input_tokens})
            except FatalLLMError:
                raise
            except Exception as exc:  # classified below; anything unknown is final
                last_reason, retryable = classify_error(exc)
                last_detail = _first_line(exc)
                if not retryable:
                    raise LLMCallFailed(last_reason, last_detail) from None
                # The lease is already given back: the pause holds no endpoint slot.
                await asyncio.sleep(self._backoff(attempt, _retry_after(exc)))
                continue
            if completion.finish_reason == "length" and self.config.parse_mode == "strict":
                # A cut answer is never parsed as if complete; the same budget would cut it again. A lenient
                # config (a tiny local model that rambles into its cap) takes it as a lenient parse.
                raise LLMCallFailed("truncated", f"cut at max_tokens={self.config.max_tokens} after "
                                                 f"{completion.output_tokens} completion tokens "
                                                 f"({completion.reasoning_tokens} of them reasoning)")
            if not completion.text:
                last_reason, last_detail = "empty_content", "the endpoint returned no text"
            elif accept is not None and not accept(completion.text):
                last_reason, last_detail = "unparseable", completion.text[:200]
            else:
                return completion
        raise LLMCallFailed(last_reason, last_detail)

    async def _request(self, messages, sample_index: int, attempt: int, usage: RoleUsage) -> Completion:
        """One answer from some endpoint; throttled and unreachable endpoints hand the request on."""
        kwargs: dict[str, Any] = {}
        if self.config.seed is not None:
            # Distinct samples of one prompt need distinct seeds; a re-ask must not repeat itself.
            kwargs["seed"] = self.config.seed + 1000 * sample_index + attempt
        estimate = sum(len(str(m.content)) for m in messages) // 4 + 1
        handoffs = 0
        while True:
            # Every send takes its turn, a hand-off after a 429 too; tokens are charged once per answer.
            await self._respect_rate_limits(estimate if handoffs == 0 else 0)
            lease = await self._acquire()
            if self._tripped:  # the breaker tripped while this call waited for a slot: send nothing more
                self.pool.abandoned(lease)
                raise self._tripped
            usage.requests += 1  # counted when sent: a call cancelled while it waited for a slot sent nothing
            if self.usage_journal:
                self.usage_journal(usage, {"requests": 1})
            self.in_flight += 1
            try:
                message = await asyncio.wait_for(lease.endpoint.next_model().ainvoke(messages, **kwargs), self.config.timeout + 5)
            except asyncio.CancelledError:
                self.pool.abandoned(lease)
                raise
            except Exception as exc:
                pause = self._hand_back(lease, exc)
                if pause is not None and handoffs < MAX_HANDOFFS:
                    handoffs += 1
                    await asyncio.sleep(pause)  # Retry-After honoured, holding no slot
                    continue
                raise
            finally:
                self.in_flight -= 1
            completion = completion_of(message)
            self.pool.succeeded(lease, completion.input_tokens, completion.output_tokens)
            if self._token_rate and (spent := completion.input_tokens + completion.output_tokens):
                self._token_rate.charge(spent - estimate)
            return completion

    async def _acquire(self) -> Lease:
        try:
            return await self.pool.acquire()
        except PoolExhausted as exc:
            raise FatalLLMError(f"cannot reach any LLM endpoint of '{self.config.name}' {exc}") from None

    def _hand_back(self, lease: Lease, exc: Exception) -> float | None:
        """Report a failed request to the pool; the seconds to wait before another endpoint (or a later
        try) takes it, or None when the error is the caller's to handle."""
        reason, retryable = classify_error(exc)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, openai.AuthenticationError):
            self.pool.failed(lease, reason, "", unreachable=False, server_side=False)
            raise FatalLLMError(
                f"the endpoint {lease.endpoint.url} rejected the API key (401): check "
                f"{self._key_env(lease.endpoint.url)}") from None
        if status in THROTTLE_STATUS:
            return self.pool.throttled(lease, reason, _retry_after(exc))
        unreachable = reason == "connection_error"
        self.pool.failed(lease, reason, _first_line(exc), unreachable=unreachable,
                         server_side=retryable and not unreachable and reason != "malformed_response")
        return 0.0 if unreachable else None

    def _key_env(self, url: str) -> str | None:
        return next((e.api_key_env for e in self.config.endpoint_list() if e.base_url == url), self.config.api_key_env)

    async def _respect_rate_limits(self, estimated_tokens: int) -> None:
        """Wait for this request's turn under requests_per_second and tokens_per_minute, holding no slot."""
        waits = [bucket.reserve(amount) for bucket, amount in
                 ((self._request_rate, 1), (self._token_rate, estimated_tokens)) if bucket]
        if (wait := max(waits, default=0.0)) > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 60.0)
        return min(2.0**attempt, 30.0) * (0.5 + random.random())


@dataclass
class LLMPool:
    """The run's two clients: one evolves and answers, one analyses and optimizes."""

    evol: ChatLLM
    optim: ChatLLM
    prior_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    """Usage of earlier invocations of this run (a resumed run adds to it)."""
    prior_cost: dict[str, float] = field(default_factory=dict)
    """USD per role spent by earlier invocations."""
    prior_cost_without_cache: dict[str, float] = field(default_factory=dict)
    """The same priced as if no input had been a prompt-cache hit."""
    worker_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per Ray worker of this invocation, its latest `worker_report()`: its usage, cost and endpoints."""
    judge: ChatLLM | None = None
    """The failure judge's own client (--judge-llm-config); None: the judge asks the evol client."""

    def clients(self) -> list[ChatLLM]:
        unique = [self.evol] if self.evol is self.optim else [self.evol, self.optim]
        return unique + ([self.judge] if self.judge is not None and self.judge not in unique else [])

    @property
    def judge_llm(self) -> ChatLLM:
        """The client the failure judge asks."""
        return self.judge or self.evol

    def own_usage(self) -> dict[str, dict[str, int]]:
        """Counters of this process's clients only, per role."""
        return _merge([{role: vars(u) for role, u in client.usage.items()} for client in self.clients()])

    def usage_this_invocation(self) -> dict[str, dict[str, int]]:
        """Counters of this invocation, per role: this process and its Ray workers."""
        return _merge([self.own_usage(), *(report["usage"] for report in self.worker_reports.values())])

    def worker_report(self) -> dict[str, Any]:
        """What a Ray worker hands the driver: its usage, cost per role and endpoint figures."""
        return {"usage": self.own_usage(), "cost": self.own_cost(), "cost_without_cache": self.own_cost(with_cache=False),
                "endpoints": self.endpoint_stats()}

    def usage_by_role(self) -> dict[str, dict[str, int]]:
        """Counters of the whole run, earlier invocations included."""
        return _merge([self.prior_usage, self.usage_this_invocation()])

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint of each client (this invocation only): requests, errors, tokens, latency, limit history."""
        roles = {id(self.judge): "judge", id(self.evol): "evol", id(self.optim): "optim"}
        own = [{"llm": roles[id(client)], **endpoint} for client in self.clients() for endpoint in client.pool.summary()]
        # A worker's endpoints carry its name: each worker holds its own share of every endpoint's cap.
        return own + [{**endpoint, "worker": name} for name, report in sorted(self.worker_reports.items())
                      for endpoint in report["endpoints"]]

    def own_cost(self, with_cache: bool = True) -> dict[str, float]:
        """USD per role spent by this process's clients, for the roles whose config has prices; `with_cache`
        False prices the cached input as uncached (what the run would have cost without prompt caching)."""
        by_role: dict[str, float] = defaultdict(float)
        for client in self.clients():
            for role, usage in client.usage.items():
                cached = usage.cached_input_tokens if with_cache else 0
                amount = client.config.cost(usage.input_tokens, usage.output_tokens, cached)
                if amount is not None:
                    by_role[role] += amount
        return dict(by_role)

    def cost(self) -> dict[str, Any] | None:
        """USD per role and in total for this invocation (its workers too) plus earlier ones, when the configs
        have prices; the same without the prompt cache's discount, and the share of input that was cached."""
        tables = {True: [self.own_cost(), self.prior_cost, *(r["cost"] for r in self.worker_reports.values())],
                  False: [self.own_cost(with_cache=False), self.prior_cost_without_cache,
                          *(r.get("cost_without_cache", r["cost"]) for r in self.worker_reports.values())]}
        totals: dict[bool, dict[str, float]] = {}
        for with_cache, parts in tables.items():
            by_role = totals[with_cache] = defaultdict(float)
            for table in parts:
                for role, amount in table.items():
                    by_role[role] += amount
        if not totals[True]:
            return None
        # A run priced before cached input was counted has no figure without the cache: its cost stands in.
        without = {role: totals[False].get(role, amount) for role, amount in totals[True].items()}
        usage = self.usage_by_role().values()
        input_tokens = sum(u.get("input_tokens", 0) for u in usage)
        return {"total_usd": round(sum(totals[True].values()), 6),
                "by_role": {r: round(v, 6) for r, v in sorted(totals[True].items())},
                "total_usd_without_cache": round(sum(without.values()), 6),
                "by_role_without_cache": {r: round(v, 6) for r, v in sorted(without.items())},
                "cached_input_share": round(sum(u.get("cached_input_tokens", 0) for u in usage) / input_tokens, 4)
                if input_tokens else 0.0}


def _merge(tables: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for table in tables:
        for role, counters in table.items():
            total = merged.setdefault(role, {})
            for name, value in counters.items():
                total[name] = total.get(name, 0) + value
    return dict(sorted(merged.items()))
