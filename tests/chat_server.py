"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests of the endpoint pool.

It runs in the test's own event loop (plain asyncio streams, HTTP/1.1 keep-alive). Per
server: a fixed latency, a capacity above which it answers 429 with Retry-After, and a
kill switch that refuses new connections and drops the ones open (requests in flight
see their connection reset). The answer depends only on the prompt, so every server
gives the same text.
"""

from __future__ import annotations

import asyncio
import json


def answer_for(prompt: str) -> str:
    return f"answer to: {prompt}"


class ChatServer:
    """One simulated endpoint; counts what it served, throttled and its peak in flight."""

    def __init__(self, latency: float = 0.01, capacity: int | None = None, retry_after: str = "0.1",
                 kill_after: int | None = None, completion_tokens: int | None = None):
        self.latency, self.capacity, self.retry_after = latency, capacity, retry_after
        self.kill_after, self.completion_tokens = kill_after, completion_tokens
        self.served = self.throttled = self.in_flight = self.peak = 0
        self.killed = False
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> "ChatServer":
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
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

    async def _answer(self, request_line: bytes, body: bytes) -> tuple[int, list[str], dict]:
        if b"/chat/completions" not in request_line:
            return 404, [], {"error": {"message": "not found"}}
        if self.capacity is not None and self.in_flight >= self.capacity:
            self.throttled += 1
            return 429, [f"Retry-After: {self.retry_after}"], {"error": {"message": "too many requests"}}
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        request = json.loads(body)
        prompt = request["messages"][-1]["content"]
        text = answer_for(prompt)
        completion = self.completion_tokens if self.completion_tokens is not None else len(text) // 4 + 1
        return 200, [], {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": request.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": completion,
                      "total_tokens": len(prompt) // 4 + 1 + completion},
        }
