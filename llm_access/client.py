"""The one way this tool talks to an LLM.

`ChatLLM` sends an `LLMConfig`'s requests through a pool of `ChatOpenAI` clients, one
per endpoint (llm_access.pool: least-loaded choice, concurrency that adapts to
throttling, failover), and adds what a long data run needs: optional rate and token
limits, retries that tell transient from final errors, `<think>` stripping, token
accounting per role, and an answer cache keyed by (endpoint, model, params, messages,
sample index), where the endpoint of a pool is the pool as a whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
from collections import defaultdict
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
    """What one call returned, think blocks removed."""

    text: str
    """The answer's content."""
    input_tokens: int
    """Prompt tokens reported by the endpoint (0 when cached)."""
    output_tokens: int
    """Completion tokens reported by the endpoint (0 when cached)."""
    cached: bool = False
    """True when the answer came from the cache, with no request made."""


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
        self._db.commit()

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, text: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, text))
        self._db.commit()

    def close(self) -> None:
        self._db.close()


CONNECTIONS_PER_CLIENT = 32
"""httpcore scans every connection of a pool on each request: at 256 in flight one pool cost
more CPU than the rest of the run (12 ms per request), so an endpoint gets one client per 32."""


def build_chat_model(config: LLMConfig, endpoint: EndpointConfig | None = None,
                     connections: int | None = None) -> BaseChatModel:
    """A ChatOpenAI for one endpoint of this config (the first by default); retries are ours, so the client's are off."""
    endpoint = endpoint or config.endpoint_list()[0]
    connections = connections or endpoint.concurrency or 1
    return ChatOpenAI(
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

    def cache_key(self, messages: list[BaseMessage], sample_index: int) -> str:
        c = self.config
        # The embedded server's port changes per run; its identity is the model. A pool's
        # answers must hit the cache whichever endpoint gave them; one endpoint keeps the
        # URL, as caches written before pools existed did.
        urls = [e.base_url for e in c.endpoint_list()]
        endpoint = "embedded" if c.embedded else urls[0] if len(urls) == 1 else "pool"
        payload = [endpoint, c.model, c.temperature, c.top_p, c.max_tokens, c.extra_body, c.seed,
                   messages_to_dict(messages), sample_index]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    async def complete(
        self, prompt: str | list[BaseMessage], *, role: str, sample_index: int = 0,
        accept: Callable[[str], bool] | None = None,
    ) -> Completion:
        """Answer `prompt`; `accept` rejects an unusable answer, which is re-asked.

        Raises LLMCallFailed when retries are spent, FatalLLMError when the endpoint
        cannot serve the run (bad key, unreachable).
        """
        messages = [HumanMessage(prompt)] if isinstance(prompt, str) else prompt
        key = self.cache_key(messages, sample_index)
        usage = self.usage[role]
        usage.calls += 1
        if self.cache and (hit := self.cache.get(key)) is not None:
            usage.cached_calls += 1
            return Completion(hit, 0, 0, cached=True)
        self.budget.check()
        try:
            completion = await self._complete_with_retries(messages, sample_index, accept, usage)
        except LLMCallFailed:
            usage.failed_calls += 1
            raise
        if self.cache:
            self.cache.put(key, completion.text)
        return completion

    async def _complete_with_retries(self, messages, sample_index, accept, usage: RoleUsage) -> Completion:
        last_reason, last_detail = "error", ""
        for attempt in range(self.config.max_retries + 1):
            try:
                completion = await self._request(messages, sample_index, attempt, usage)
                # Every answer costs tokens, the rejected ones too.
                usage.input_tokens += completion.input_tokens
                usage.output_tokens += completion.output_tokens
                self.budget.used += completion.input_tokens + completion.output_tokens
                if self.usage_journal:
                    self.usage_journal(usage, {"input_tokens": completion.input_tokens,
                                               "output_tokens": completion.output_tokens})
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
            answer_usage = getattr(message, "usage_metadata", None) or {}
            completion = Completion(
                strip_think(message.content if isinstance(message.content, str) else str(message.content)),
                answer_usage.get("input_tokens", 0), answer_usage.get("output_tokens", 0))
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
    worker_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per Ray worker of this invocation, its latest `worker_report()`: its usage, cost and endpoints."""

    def clients(self) -> list[ChatLLM]:
        return [self.evol] if self.evol is self.optim else [self.evol, self.optim]

    def own_usage(self) -> dict[str, dict[str, int]]:
        """Counters of this process's clients only, per role."""
        return _merge([{role: vars(u) for role, u in client.usage.items()} for client in self.clients()])

    def usage_this_invocation(self) -> dict[str, dict[str, int]]:
        """Counters of this invocation, per role: this process and its Ray workers."""
        return _merge([self.own_usage(), *(report["usage"] for report in self.worker_reports.values())])

    def worker_report(self) -> dict[str, Any]:
        """What a Ray worker hands the driver: its usage, cost per role and endpoint figures."""
        return {"usage": self.own_usage(), "cost": self.own_cost(), "endpoints": self.endpoint_stats()}

    def usage_by_role(self) -> dict[str, dict[str, int]]:
        """Counters of the whole run, earlier invocations included."""
        return _merge([self.prior_usage, self.usage_this_invocation()])

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint of each client (this invocation only): requests, errors, tokens, latency, limit history."""
        roles = {id(self.evol): "evol", id(self.optim): "optim"}
        own = [{"llm": roles[id(client)], **endpoint} for client in self.clients() for endpoint in client.pool.summary()]
        # A worker's endpoints carry its name: each worker holds its own share of every endpoint's cap.
        return own + [{**endpoint, "worker": name} for name, report in sorted(self.worker_reports.items())
                      for endpoint in report["endpoints"]]

    def own_cost(self) -> dict[str, float]:
        """USD per role spent by this process's clients, for the roles whose config has prices."""
        by_role: dict[str, float] = defaultdict(float)
        for client in self.clients():
            for role, usage in client.usage.items():
                amount = client.config.cost(usage.input_tokens, usage.output_tokens)
                if amount is not None:
                    by_role[role] += amount
        return dict(by_role)

    def cost(self) -> dict[str, Any] | None:
        """USD per role and in total for this invocation (its workers too) plus earlier ones, when the configs have prices."""
        by_role: dict[str, float] = defaultdict(float)
        for table in [self.own_cost(), self.prior_cost, *(report["cost"] for report in self.worker_reports.values())]:
            for role, amount in table.items():
                by_role[role] += amount
        if not by_role:
            return None
        return {"total_usd": round(sum(by_role.values()), 6), "by_role": {r: round(v, 6) for r, v in sorted(by_role.items())}}


def _merge(tables: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for table in tables:
        for role, counters in table.items():
            total = merged.setdefault(role, {})
            for name, value in counters.items():
                total[name] = total.get(name, 0) + value
    return dict(sorted(merged.items()))
