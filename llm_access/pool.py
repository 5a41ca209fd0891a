"""Several endpoints behind one client: least-loaded choice, adaptive limits, failover.

Each endpoint has a concurrency limit that adapts to throttling (AIMD): it starts at the
configured cap, is cut by a quarter on a 429 or 503 (once per round of requests, not once
per throttled request in flight), and rises by one after a run of successes. A throttled
endpoint cools down for its Retry-After and takes no new request meanwhile.

An endpoint that cannot be reached, or answers a streak of server errors, is taken down,
then probed with one request after a growing pause. Requests queue here, holding no slot,
until an endpoint has room; when every endpoint is down and each has failed its probes,
the pool gives up and every waiting request gets one FatalLLMError naming the URLs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

DECREASE_FACTOR = 0.75
"""A throttled endpoint keeps this share of its limit."""
SUCCESSES_PER_INCREASE = 25
"""Successes in a row after which the limit rises by one."""
PLATEAU_SLOWDOWN = 4
"""Near the limit that was last throttled the rise is this many times slower: capacity is probed, not hit."""
DEFAULT_COOLDOWN = 1.0
"""Seconds a throttled endpoint rests when the answer carries no Retry-After."""
MAX_COOLDOWN = 60.0
SERVER_ERROR_STREAK = 3
"""Server errors or timeouts in a row that take an endpoint down."""
LATENCY_SAMPLES = 1024
"""Size of the reservoir the latency percentiles come from."""
LIMIT_HISTORY = 512
"""Most (time, limit) points kept per endpoint; older ones are thinned out beyond it."""


class PoolExhausted(RuntimeError):
    """Every endpoint is down and has failed its probes."""


@dataclass
class EndpointStats:
    """What one endpoint did during this invocation."""

    requests: int = 0
    """Requests sent, probes and rerouted ones included."""
    succeeded: int = 0
    errors: Counter = field(default_factory=Counter)
    """Failed requests by kind (http_429, connection_error, timeout, ...)."""
    input_tokens: int = 0
    output_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    """A uniform sample (reservoir) of the latencies of successful requests."""
    limit_history: list[tuple[float, int]] = field(default_factory=list)
    """(unix time, limit) at each change of the limit, thinned out to LIMIT_HISTORY points."""

    def add_latency(self, seconds: float, rng: random.Random) -> None:
        if len(self.latencies) < LATENCY_SAMPLES:
            self.latencies.append(seconds)
        elif (slot := rng.randrange(self.succeeded)) < LATENCY_SAMPLES:
            self.latencies[slot] = seconds

    def add_limit(self, limit: int) -> None:
        if self.limit_history and self.limit_history[-1][1] == limit:
            return
        self.limit_history.append((round(time.time(), 3), limit))
        if len(self.limit_history) > LIMIT_HISTORY:
            # Every other point, the first and the latest kept: the whole run's shape stays visible.
            self.limit_history[:] = self.limit_history[:-1:2] + self.limit_history[-1:]

    def percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)) if ordered else (lambda q: None)
        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


@dataclass
class Endpoint:
    """One server of the pool and its health."""

    url: str
    models: list[BaseChatModel]
    """Clients of this endpoint, used in turn (each has its own connection pool)."""
    cap: int
    """The configured concurrency; the limit never rises above it."""
    weight: float = 1.0
    limit: float = 0.0
    """Current concurrency limit (AIMD); requests in flight may exceed it just after a cut."""
    in_flight: int = 0
    turn: int = 0
    """Index of the client that took the latest request."""
    epoch: int = 0
    """Number of cuts so far; a 429 on a request sent before the latest cut does not cut again."""
    successes_in_row: int = 0
    throttled_limit: float = 0.0
    """The limit at the latest cut; rising past it again is done slowly."""
    cuts_without_success: int = 0
    """Cuts since the last success: a second one means the cut alone did not relieve the server."""
    server_error_streak: int = 0
    cooling_until: float = 0.0
    """time.monotonic() before which the endpoint takes no new request."""
    down: bool = False
    """Unreachable or failing; after its cooldown it takes one probe request at a time."""
    strikes: int = 0
    """Failures in a row while down (the first one included); reset by any success."""
    last_error: str = ""
    stats: EndpointStats = field(default_factory=EndpointStats)

    def __post_init__(self) -> None:
        self.limit = float(self.cap)
        self.stats.add_limit(self.cap)

    def next_model(self) -> BaseChatModel:
        """The next client in turn."""
        self.turn = (self.turn + 1) % len(self.models)
        return self.models[self.turn]

    def room(self, now: float) -> int:
        """How many more requests it takes now."""
        if now < self.cooling_until:
            return 0
        capacity = 1 if self.down else max(1, int(self.limit))
        return capacity - self.in_flight

    def set_limit(self, limit: float) -> None:
        self.limit = limit
        self.successes_in_row = 0
        self.stats.add_limit(max(1, int(limit)))

    def summary(self) -> dict:
        s = self.stats
        return {
            "base_url": self.url, "cap": self.cap, "weight": self.weight, "limit": max(1, int(self.limit)),
            "down": self.down, "requests": s.requests, "succeeded": s.succeeded, "errors": dict(sorted(s.errors.items())),
            "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "latency_seconds": s.percentiles(), "limit_history": [list(point) for point in s.limit_history],
        }


@dataclass(frozen=True)
class Lease:
    """One request's hold on one endpoint."""

    endpoint: Endpoint
    epoch: int
    probe: bool
    started: float


class EndpointPool:
    """Hands each request the least-loaded endpoint with room, and learns from how it went."""

    def __init__(self, endpoints: list[Endpoint], max_strikes: int = 3):
        self.endpoints = endpoints
        self.max_strikes = max(1, max_strikes)
        self._waiters: deque[asyncio.Future] = deque()
        self._wake: asyncio.TimerHandle | None = None
        self._exhausted: PoolExhausted | None = None
        self._rng = random.Random(0)

    def urls(self) -> str:
        return ", ".join(e.url for e in self.endpoints)

    async def acquire(self) -> Lease:
        """A lease on an endpoint with room, waiting (without holding anything) until one has."""
        if self._exhausted:
            raise self._exhausted
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._finish(waiter.result())  # granted just as the caller gave up
            raise

    def succeeded(self, lease: Lease, input_tokens: int, output_tokens: int) -> None:
        endpoint, stats = lease.endpoint, lease.endpoint.stats
        stats.succeeded += 1
        stats.input_tokens += input_tokens
        stats.output_tokens += output_tokens
        stats.add_latency(time.monotonic() - lease.started, self._rng)
        endpoint.down, endpoint.strikes, endpoint.server_error_streak = False, 0, 0
        endpoint.cuts_without_success = 0
        endpoint.successes_in_row += 1
        near_throttle = abs(endpoint.limit + 1 - endpoint.throttled_limit) <= 1
        needed = SUCCESSES_PER_INCREASE * (PLATEAU_SLOWDOWN if near_throttle else 1)
        if endpoint.successes_in_row >= needed and endpoint.limit < endpoint.cap:
            endpoint.set_limit(min(endpoint.cap, int(endpoint.limit) + 1))
        self._finish(lease)

    def throttled(self, lease: Lease, reason: str, retry_after: float | None) -> float:
        """A 429 or 503: cut the limit once per round; returns the Retry-After the request waits out.

        The whole endpoint rests for it too when a cut did not help (throttled again before any
        success): then the server limits by rate, not by requests in flight, and every new
        request would be refused. After a first cut the requests in flight above the new limit
        already hold new ones back, and resting would idle the capacity the server does have.
        """
        endpoint = lease.endpoint
        endpoint.stats.errors[reason] += 1
        pause = min(MAX_COOLDOWN, retry_after if retry_after is not None else DEFAULT_COOLDOWN)
        if lease.epoch == endpoint.epoch:
            endpoint.epoch += 1
            endpoint.cuts_without_success += 1
            endpoint.throttled_limit = endpoint.limit
            endpoint.set_limit(max(1.0, endpoint.limit * DECREASE_FACTOR))
        if endpoint.cuts_without_success >= 2:
            endpoint.cooling_until = max(endpoint.cooling_until, time.monotonic() + pause)
        self._finish(lease)
        return pause

    def failed(self, lease: Lease, reason: str, detail: str, *, unreachable: bool, server_side: bool) -> None:
        """Any other error; `unreachable` takes the endpoint down, `server_side` ones do after a streak."""
        endpoint = lease.endpoint
        endpoint.stats.errors[reason] += 1
        if server_side:
            endpoint.server_error_streak += 1
        if unreachable or endpoint.server_error_streak >= SERVER_ERROR_STREAK:
            endpoint.last_error = f"{reason}: {detail}" if detail else reason
            self._take_down(lease)
        self._finish(lease)

    def abandoned(self, lease: Lease) -> None:
        """The caller gave up (cancelled) with the request in flight; no news about the endpoint."""
        self._finish(lease)

    def _take_down(self, lease: Lease) -> None:
        endpoint = lease.endpoint
        if endpoint.down and not lease.probe:
            return  # a request sent before it went down: no news
        endpoint.down = True
        endpoint.strikes += 1
        endpoint.server_error_streak = 0
        endpoint.cooling_until = time.monotonic() + min(30.0, 0.5 * 2 ** (endpoint.strikes - 1))
        if all(e.down and e.strikes >= self.max_strikes for e in self.endpoints):
            last = "; ".join(f"{e.url}: {e.last_error}" for e in self.endpoints)
            self._exhausted = PoolExhausted(f"({self.urls()}) after {self.max_strikes} tries each; last errors: {last}")
            while self._waiters:
                if not (waiter := self._waiters.popleft()).done():
                    waiter.set_exception(self._exhausted)

    def _finish(self, lease: Lease) -> None:
        lease.endpoint.in_flight -= 1
        self._dispatch()

    def _pick(self, now: float) -> Endpoint | None:
        open_ = [e for e in self.endpoints if e.room(now) > 0]
        if not open_:
            return None
        return min(open_, key=lambda e: (e.in_flight + 1) / (max(1.0, e.limit) * e.weight))

    def _dispatch(self) -> None:
        """Grant waiting requests, oldest first, while some endpoint has room."""
        now = time.monotonic()
        while self._waiters:
            if self._waiters[0].done():  # its caller was cancelled
                self._waiters.popleft()
                continue
            if (endpoint := self._pick(now)) is None:
                break
            endpoint.in_flight += 1
            endpoint.stats.requests += 1
            lease = Lease(endpoint, endpoint.epoch, endpoint.down, now)
            self._waiters.popleft().set_result(lease)
        self._wake_after_cooldown(now)

    def _wake_after_cooldown(self, now: float) -> None:
        """With requests waiting and only resting endpoints, dispatch again when the first rest ends."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        resting = [e.cooling_until for e in self.endpoints if e.cooling_until > now]
        if self._waiters and resting:
            self._wake = asyncio.get_running_loop().call_later(min(resting) - now, self._dispatch)

    def summary(self) -> list[dict]:
        """Per-endpoint counters, latency percentiles and limit history, for run.json."""
        return [e.summary() for e in self.endpoints]


class TokenBucket:
    """A rate limit that may go into debt: callers reserve, then wait out their share of the deficit.

    Correcting an estimate after the fact (tokens_per_minute learns the real count from
    the answer) is a negative or positive charge, which aiolimiter cannot express.
    """

    def __init__(self, rate_per_second: float, burst: float):
        self.rate, self.burst = rate_per_second, burst
        self.level, self._updated = burst, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self._updated) * self.rate)
        self._updated = now

    def reserve(self, amount: float) -> float:
        """Take `amount` now; returns the seconds to wait before using it."""
        self.charge(amount)
        return max(0.0, -self.level / self.rate)

    def charge(self, amount: float) -> None:
        """Take (or, when negative, give back) `amount` without waiting."""
        self._refill()
        self.level = min(self.burst, self.level - amount)
