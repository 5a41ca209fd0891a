"""An OpenAI-compatible proxy that injects faults in front of a real server (for tests).

At a set rate it answers instead with a 429 (with Retry-After), a 500 or 503, a stall
past the client's timeout, truncated JSON, empty content, or garbage with no marker.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FAULTS = ("rate_limited", "server_error", "unavailable", "stall", "truncated", "empty", "garbage")


class FaultProxy:
    """Forward to `upstream` (an http://host:port root); fault a share `rate` of chat requests."""

    def __init__(self, upstream: str, rate: float, seed: int = 0, stall_seconds: float = 12.0,
                 faults: tuple[str, ...] = FAULTS):
        self.upstream, self.rate, self.stall_seconds = upstream.rstrip("/"), rate, stall_seconds
        self.fault_kinds = faults
        self.authorization_headers: list[str] = []
        self.rng = random.Random(seed)
        self.requests = 0
        self.upstream_requests = 0
        self.faults: dict[str, int] = {}
        routes = [Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/models", self.models, methods=["GET"])]
        self.app = Starlette(routes=routes)

    async def models(self, request: Request) -> Response:
        try:
            async with httpx.AsyncClient() as client:
                reply = await client.get(f"{self.upstream}/v1/models")
        except httpx.HTTPError:  # an upstream that is not there: answer as a gateway would
            return Response('{"error": "bad gateway"}', 502, media_type="application/json")
        return Response(reply.content, reply.status_code, media_type="application/json")

    async def chat(self, request: Request) -> Response:
        self.requests += 1
        self.authorization_headers.append(request.headers.get("authorization", ""))
        fault = self.rng.choice(self.fault_kinds) if self.rng.random() < self.rate else None
        if fault:
            self.faults[fault] = self.faults.get(fault, 0) + 1
        if fault == "unauthorized":
            return Response('{"error": {"message": "invalid key"}}', 401, media_type="application/json")
        if fault == "rate_limited":
            return Response('{"error": "slow down"}', 429, headers={"Retry-After": "1"}, media_type="application/json")
        if fault in ("server_error", "unavailable"):
            return Response('{"error": "boom"}', 500 if fault == "server_error" else 503, media_type="application/json")
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
            return Response('{"error": "too late"}', 504, media_type="application/json")
        body = await request.body()
        async with httpx.AsyncClient(timeout=600) as client:
            reply = await client.post(f"{self.upstream}/v1/chat/completions", content=body,
                                      headers={"content-type": "application/json"})
        self.upstream_requests += 1
        content = reply.content
        if fault == "truncated":
            content = content[: len(content) // 2]
        elif fault in ("empty", "garbage"):
            data = json.loads(content)
            data["choices"][0]["message"]["content"] = "" if fault == "empty" else "zzz qqq lorem ipsum, no marker at all"
            content = json.dumps(data).encode()
        return Response(content, reply.status_code, media_type="application/json")


class RunningProxy:
    """The proxy served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, proxy: FaultProxy):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proxy = proxy
        self.server = uvicorn.Server(uvicorn.Config(proxy.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "RunningProxy":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
