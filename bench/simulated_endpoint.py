"""A simulated OpenAI-compatible chat endpoint on 127.0.0.1, shaped like a real API.

Latency is lognormal (median and sigma), as real APIs' long tails are; above `capacity`
requests in flight it answers 429 with Retry-After, as a throttling provider does. Answers
are shaped so that evolutions pass the failure rules. It measures what matters at the
server: requests in flight over time (utilization) and the sum of latencies served.

    python bench/simulated_endpoint.py --port 8123 --median 1 --sigma 1 --capacity 32
    GET /stats for the figures, POST /reset to start a new measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instant_model import _answer as shaped_answer  # noqa: E402


@dataclass
class ServerStats:
    """What the server saw since the last reset."""

    requests: int = 0
    """Chat requests received, throttled ones included."""
    throttled: int = 0
    """Requests answered 429 because capacity was full."""
    in_flight: int = 0
    peak_in_flight: int = 0
    busy_area: float = 0.0
    """Integral of requests in flight over time, in request-seconds."""
    latency_sum: float = 0.0
    """Seconds of latency served to answered requests."""
    first_start: float | None = None
    last_end: float | None = None
    _last_change: float = 0.0

    def change(self, delta: int) -> None:
        now = time.monotonic()
        if self.first_start is None:
            self.first_start = self._last_change = now
        self.busy_area += self.in_flight * (now - self._last_change)
        self._last_change = now
        self.in_flight += delta
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if delta < 0:
            self.last_end = now

    def summary(self) -> dict:
        span = (self.last_end - self.first_start) if self.first_start and self.last_end else 0.0
        figures = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        figures["span_s"] = round(span, 3)
        figures["mean_in_flight"] = round(self.busy_area / span, 3) if span else 0.0
        return figures


class SimulatedEndpoint:
    """The server; `serve()` runs it on a loop, `start_in_thread()` for tests."""

    def __init__(self, median: float = 1.0, sigma: float = 1.0, capacity: int | None = None,
                 retry_after: float = 1.0, seed: int = 0):
        self.median, self.sigma, self.capacity, self.retry_after = median, sigma, capacity, retry_after
        self.rng = random.Random(seed)
        self.stats = ServerStats()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def start_in_thread(self) -> "SimulatedEndpoint":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, *_ = head.split(b"\r\n", 1)[0].decode().split(" ")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                status, payload, headers = await self._route(method, path, body)
                data = json.dumps(payload, ensure_ascii=False).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
                             f"{extra}\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[str, dict, dict]:
        if path.endswith("/chat/completions") and method == "POST":
            return await self._chat(json.loads(body))
        if path.endswith("/models"):
            return "200 OK", {"object": "list", "data": [{"id": "simulated", "object": "model"}]}, {}
        if path == "/stats":
            return "200 OK", self.stats.summary(), {}
        if path == "/reset" and method == "POST":
            self.stats = ServerStats()
            return "200 OK", {"reset": True}, {}
        return "404 Not Found", {"error": {"message": f"no route {path}"}}, {}

    async def _chat(self, request: dict) -> tuple[str, dict, dict]:
        stats = self.stats
        stats.requests += 1
        if self.capacity is not None and stats.in_flight >= self.capacity:
            stats.throttled += 1
            return ("429 Too Many Requests", {"error": {"message": "rate limited", "type": "rate_limit"}},
                    {"retry-after": f"{self.retry_after:g}"})
        latency = self.median * math.exp(self.sigma * self.rng.gauss(0.0, 1.0))
        stats.change(+1)
        try:
            await asyncio.sleep(latency)
        finally:
            stats.change(-1)
        stats.latency_sum += latency
        prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        text = shaped_answer(prompt, request.get("seed"))
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                 "total_tokens": (len(prompt) + len(text)) // 4}
        return "200 OK", {"id": f"sim-{stats.requests}", "object": "chat.completion", "created": int(time.time()),
                          "model": request.get("model", "simulated"),
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}],
                          "usage": usage}, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--median", type=float, default=1.0, help="median latency in seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape")
    parser.add_argument("--capacity", type=int, default=None, help="requests in flight above which it answers 429")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    endpoint = SimulatedEndpoint(args.median, args.sigma, args.capacity, seed=args.seed)

    async def run() -> None:
        await endpoint.serve(args.port)
        print(f"listening {endpoint.base_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
