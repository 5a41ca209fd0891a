"""An OpenAI-shaped endpoint on 127.0.0.1 that only counts requests: proof that a check came before any call."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from run import main


class CountingServer:
    """An OpenAI-shaped endpoint on 127.0.0.1 that only counts requests (and answers 401: no retries)."""

    def __init__(self):
        counter = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                counter.requests += 1
                self.send_response(401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    server = CountingServer()
    config = tmp_path / "counting.yaml"
    config.write_text(f"preset: openai\nbase_url: {server.base_url}\napi_key_env: COUNTING_KEY\nmax_retries: 0\n")
    monkeypatch.setenv("COUNTING_KEY", "x")
    yield server, str(config)
    server.close()


def run_expecting_error(endpoint, tmp_path, capsys, *args, save=True):
    server, config = endpoint
    argv = ["--evol-llm-config", config, "--quiet", *args]
    if save:
        argv += ["--save-path", str(tmp_path / "out")]
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert server.requests == 0, "an LLM request was sent before the mistake was found"
    return errors[0]
