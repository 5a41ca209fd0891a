"""A simulated OpenAI-compatible chat endpoint on 127.0.0.1, for the tests and the bench.

Plain asyncio streams, HTTP/1.1 keep-alive. Per server: a latency (fixed, or lognormal with
a median and a shape, as real APIs' long tails are), a capacity above which it answers 429
with Retry-After, and a kill switch that refuses new connections and drops the ones open.
It measures at the server what a client cannot: requests in flight over time.

Real endpoints' shapes, each off by default (`ServerShapes`): reasoning in any of the three forms,
answers cut at `finish_reason: "length"`, usage with cached and reasoning tokens in DeepSeek's or
OpenAI's field names, a listed set of models (GET /v1/models, 404 for another), a strict /v1
path, and a fixed error status for every chat request.

    python tests/chat_server.py --median 1 --sigma 1 --capacity 32   # the bench runs it like this
    GET /stats for the figures, POST /reset to start a new measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass


def answer_for(prompt: str, seed: int | None = None) -> str:
    """The same text for the same prompt, whichever server answers."""
    return f"answer to: {prompt}"


def shaped_answer(prompt: str, seed: int | None = None) -> str:
    """Answers shaped like a good model's, so evolutions pass the failure rules and methods parse."""
    if "<feedback>" in prompt:
        method = prompt.split("<method>\n", 1)[1].split("\n</method>", 1)[0]
        # One real change, so that the method gate (near_copy) lets the candidate through to validation.
        return (f"Tightened.\n```Optimized Method\n{method}\nSample {seed}: keep every number and every name the "
                "instruction gives, and add exactly one constraint a reader can check.\n```")
    if "### Case " in prompt:
        return "Case 1: fine. Summary: nothing to fix."
    if "#Instruction#\n" in prompt:
        instruction = prompt.rsplit("#Instruction#\n", 1)[1].strip()
        return f"#Finally Rewritten Instruction#\n{instruction} Justify each step with a short example."
    return "A complete answer, with the reasoning laid out and one worked example at the end."


REASONING_TEXT = "SECRET-THOUGHT: first I weigh the task, then I draft it."
"""The reasoning every answer carries in a reasoning shape; a test finds it wherever it leaked."""


@dataclass
class ServerShapes:
    """How the simulated endpoint departs from a plain, well-configured chat completion."""

    reasoning: str | None = None
    """None, "reasoning_content" (DeepSeek), "reasoning" (newer vLLM), "think" (<think>…</think> in the
    content) or "think_close" (only the closing tag, as templates that put <think> in the prompt do)."""
    reasoning_tokens: int = 0
    """Reported in usage.completion_tokens_details.reasoning_tokens and counted inside completion_tokens."""
    cut_share: float = 0.0
    """Share of chat answers cut: half the text, finish_reason "length" (chosen by a hash of the prompt)."""
    cut_only: str = ""
    """When set, only prompts containing this text may be cut (e.g. "<feedback>": the optimizer's)."""
    usage_style: str | None = None
    """Cached input tokens reported as "deepseek" (prompt_cache_hit/miss_tokens) or "openai"
    (prompt_tokens_details.cached_tokens); None reports none."""
    models: tuple[str, ...] | None = None
    """Served model ids: GET /v1/models lists them, a chat request for another one gets 404. None: no
    /v1/models, any model accepted."""
    any_model: bool = False
    """True: a chat request for a model not in `models` is answered anyway (llama.cpp's server lists its file)."""
    models_route: bool = True
    """False: no GET /v1/models even with `models` set (many servers have none)."""
    strict_path: bool = False
    """Only /v1/... paths exist (a base_url without /v1 gets 404), as most real servers."""
    chat_status: int | None = None
    """Answer chat requests with this error status (400, 403, ...), from the `fail_from`-th one on."""
    fail_from: int = 1
    """The first chat request (1-based) that gets `chat_status`; earlier ones are answered."""
    fail_until: int | None = None
    """The last chat request that gets it; None: every one from `fail_from` on."""


class BusyMeter:
    """Requests in flight over time: their integral and the span they cover."""

    def __init__(self):
        self.area = 0.0
        """Request-seconds in flight."""
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.latency_sum = 0.0
        """Seconds of latency served to answered requests."""
        self._in_flight, self._since = 0, 0.0

    def change(self, delta: int) -> None:
        now = time.monotonic()
        if self.first_start is None:
            self.first_start = self._since = now
        self.area += self._in_flight * (now - self._since)
        self._in_flight, self._since = self._in_flight + delta, now
        if delta < 0:
            self.last_end = now

    def figures(self) -> dict:
        span = (self.last_end - self.first_start) if self.first_start is not None and self.last_end else 0.0
        return {"span_s": round(span, 3), "mean_in_flight": round(self.area / span, 3) if span else 0.0,
                "latency_sum_s": round(self.latency_sum, 3)}


class ChatServer:
    """One simulated endpoint; counts what it served, throttled and its peak in flight."""

    def __init__(self, latency: float = 0.01, capacity: int | None = None, retry_after: str = "0.1",
                 kill_after: int | None = None, completion_tokens: int | None = None, sigma: float = 0.0,
                 answer: Callable[[str, int | None], str] = answer_for, seed: int = 0,
                 shapes: ServerShapes | None = None):
        self.latency, self.capacity, self.retry_after = latency, capacity, retry_after
        self.shapes = shapes or ServerShapes()
        self.received = self.chat_requests = 0
        """Every request, answered or refused, /stats and /reset excepted; of them, those to /chat/completions."""
        self.reported = {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "cached_tokens": 0,
                         "cut": 0}
        """Sums of what the answers reported, for a test to compare with the client's count."""
        """latency is the median when sigma > 0 (lognormal), else fixed."""
        self.kill_after, self.completion_tokens, self.sigma, self.answer = kill_after, completion_tokens, sigma, answer
        self.rng = random.Random(seed)
        self.served = self.throttled = self.in_flight = self.peak = 0
        self.busy = BusyMeter()
        self.killed = False
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> "ChatServer":
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        self.kill()
        # Let the handlers see their reset connections before the test's loop closes.
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def kill(self) -> None:
        """Stop listening and reset every open connection."""
        self.killed = True
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._handlers.add(asyncio.current_task())
        try:
            while not self.killed and (request_line := await reader.readline()):
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra, payload = await self._answer(request_line, body)
                if self.killed:
                    return
                data = json.dumps(payload).encode()
                head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", "Content-Type: application/json",
                        f"Content-Length: {len(data)}", *extra]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if status == 200:
                    self.served += 1
                    if self.kill_after is not None and self.served >= self.kill_after:
                        self.kill()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(asyncio.current_task())
            writer.transport.abort()

    def stats(self) -> dict:
        return {"served": self.served, "throttled": self.throttled, "peak_in_flight": self.peak, **self.busy.figures()}

    async def _answer(self, request_line: bytes, body: bytes) -> tuple[int, list[str], dict]:
        if request_line.startswith(b"GET /stats"):
            return 200, [], self.stats()
        if request_line.startswith(b"POST /reset"):
            self.served = self.throttled = self.peak = 0
            self.busy = BusyMeter()
            return 200, [], {"reset": True}
        self.received += 1
        shapes = self.shapes
        if shapes.strict_path and not request_line.split(b" ")[1].startswith(b"/v1/"):
            return 404, [], {"error": {"message": "not found"}}
        if request_line.startswith(b"GET ") and b"/models" in request_line and shapes.models is not None \
                and shapes.models_route:
            return 200, [], {"object": "list", "data": [{"id": m, "object": "model"} for m in shapes.models]}
        if b"/chat/completions" not in request_line:
            return 404, [], {"error": {"message": "not found"}}
        self.chat_requests += 1
        if shapes.chat_status is not None and shapes.fail_from <= self.chat_requests <= (shapes.fail_until or math.inf):
            return shapes.chat_status, [], {"error": {"message": f"refused ({shapes.chat_status})"}}
        model = json.loads(body).get("model")
        if shapes.models is not None and model not in shapes.models and not shapes.any_model:
            return 404, [], {"error": {"message": f"The model `{model}` does not exist", "code": "model_not_found"}}
        if self.capacity is not None and self.in_flight >= self.capacity:
            self.throttled += 1
            return 429, [f"Retry-After: {self.retry_after}"], {"error": {"message": "too many requests"}}
        latency = self.latency * math.exp(self.sigma * self.rng.gauss(0.0, 1.0)) if self.sigma else self.latency
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.busy.change(+1)
        try:
            await asyncio.sleep(latency)
        finally:
            self.in_flight -= 1
            self.busy.change(-1)
        self.busy.latency_sum += latency
        request = json.loads(body)
        prompt = request["messages"][-1]["content"]
        text = self.answer(prompt, request.get("seed"))
        finish = "stop"
        if shapes.cut_share and shapes.cut_only in prompt and zlib.crc32(prompt.encode()) % 1000 < shapes.cut_share * 1000:
            text, finish = text[: len(text) // 2], "length"
            self.reported["cut"] += 1
        completion = self.completion_tokens if self.completion_tokens is not None else len(text) // 4 + 1
        completion += shapes.reasoning_tokens
        prompt_tokens = len(prompt) // 4 + 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion}
        usage.update(self._usage_details(prompt_tokens))
        message = {"role": "assistant", "content": text}
        if shapes.reasoning in ("reasoning_content", "reasoning"):
            message[shapes.reasoning] = REASONING_TEXT
        elif shapes.reasoning == "think":
            message["content"] = f"<think>\n{REASONING_TEXT}\n</think>\n\n{text}"
        elif shapes.reasoning == "think_close":
            message["content"] = f"{REASONING_TEXT}\n</think>\n\n{text}"
        for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion),
                            ("reasoning_tokens", shapes.reasoning_tokens)):
            self.reported[name] += value
        return 200, [], {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": request.get("model", "m"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }

    def _usage_details(self, prompt_tokens: int) -> dict:
        """Cached and reasoning token fields in the configured provider's names; half the prompt is a cache hit."""
        details: dict = {}
        if self.shapes.reasoning_tokens:
            details["completion_tokens_details"] = {"reasoning_tokens": self.shapes.reasoning_tokens}
        cached = prompt_tokens // 2
        if self.shapes.usage_style == "deepseek":
            details.update(prompt_cache_hit_tokens=cached, prompt_cache_miss_tokens=prompt_tokens - cached)
        elif self.shapes.usage_style == "openai":
            details["prompt_tokens_details"] = {"cached_tokens": cached}
        else:
            cached = 0
        self.reported["cached_tokens"] += cached
        return details


class ServerThread:
    """A ChatServer on its own event loop in a thread, for a run.py subprocess to call."""

    def __init__(self, **options):
        self.server = ChatServer(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="A simulated OpenAI-compatible endpoint on 127.0.0.1.")
    parser.add_argument("--median", type=float, default=1.0, help="median latency in seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape of the latency")
    parser.add_argument("--capacity", type=int, default=None, help="requests in flight above which it answers 429")
    parser.add_argument("--retry-after", default="1", help="the Retry-After header of a 429")
    args = parser.parse_args()

    async def serve() -> None:
        async with ChatServer(latency=args.median, sigma=args.sigma, capacity=args.capacity,
                              retry_after=args.retry_after, answer=shaped_answer) as server:
            print(f"listening {server.base_url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
