"""LangGraph Studio's dev server runs the exported graph on the embedded model through its HTTP API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, TEST_DATA
from llm_access.embedded_server import free_port

pytestmark = pytest.mark.integration


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read() or b"null")


def _api_port(log: Path, deadline: float) -> int:
    # The dev server moves to another port, silently, when the asked one is taken.
    while time.monotonic() < deadline:
        match = re.search(r"API:\S*\s+\S*http://127\.0\.0\.1:(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", log.read_text()))
        if match:
            return int(match.group(1))
        time.sleep(0.2)
    raise AssertionError(f"the dev server printed no API address:\n{log.read_text()[-2000:]}")


@pytest.fixture
def dev_server(tmp_path):
    log = tmp_path / "langgraph-dev.log"
    # The dev server writes its state (.langgraph_api/) into its cwd and resolves the config's paths
    # from there: it runs in a temporary folder, on the project's langgraph.json with absolute paths.
    project = json.loads((REPO / "langgraph.json").read_text())
    project["dependencies"] = [str(REPO)]
    project["graphs"] = {name: str(REPO / spec.removeprefix("./")) for name, spec in project["graphs"].items()}
    (tmp_path / "langgraph.json").write_text(json.dumps(project))
    command = [str(Path(sys.executable).parent / "langgraph"), "dev", "--no-browser", "--no-reload", "--allow-blocking",
               "--host", "127.0.0.1", "--port", str(free_port()), "--config", str(tmp_path / "langgraph.json")]
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        base = f"http://127.0.0.1:{_api_port(log, deadline)}"
        while True:
            assert time.monotonic() < deadline, f"the dev server never answered /ok:\n{log.read_text()[-2000:]}"
            try:
                if _http("GET", f"{base}/ok", timeout=2).get("ok"):
                    break
            except OSError:
                time.sleep(0.3)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_a_studio_run_shows_the_step_history(dev_server, tmp_path):
    thread = _http("POST", f"{dev_server}/threads", {})["thread_id"]
    run_input = {"data_path": str(TEST_DATA / "alpaca_tasks.jsonl"), "train_size": 2, "dev_size": 2,
                 "batch_size": 2, "max_steps": 1, "candidate_size": 2, "loop": 1, "test_run": True,
                 "save_path": str(tmp_path / "studio"), "evol_llm_config": "local", "optim_llm_config": "local"}
    result = _http("POST", f"{dev_server}/threads/{thread}/runs/wait",
                   {"assistant_id": "autoevol", "input": run_input}, timeout=900)
    assert "__error__" not in (result or {}), result
    state = _http("GET", f"{dev_server}/threads/{thread}/state")
    values = state["values"]
    assert state["next"] == []
    step = values["history"][0]
    assert len(step["trajectories"]) == 2 and step["feedback"] and len(step["candidates"]) == 2
    assert step["incumbent"]["score"]["dev_size"] == 2 and step["kept_method_id"] and step["decision"]
    assert values["level_counts"]["1"]["parents"] == 10
    assert (tmp_path / "studio" / "run.json").exists() and (tmp_path / "studio" / "records.jsonl").exists()


@pytest.fixture
def loopback_llm(tmp_path):
    """An LLM config file pointing at tests/chat_server.py in its own process (answers that pass the rules)."""
    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_server.py"), "--median", "0.001",
                                "--sigma", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        config = tmp_path / "loopback.yaml"
        config.write_text(f"preset: local\nembedded: false\nbase_url: {line.split()[1]}\nparse_mode: strict\n"
                          "max_tokens: 160\nconcurrency: 4\n")
        yield str(config)
    finally:
        process.kill()
        process.wait()


def test_two_studio_runs_on_one_thread_never_mix_their_data(dev_server, loopback_llm, tmp_path):
    thread = _http("POST", f"{dev_server}/threads", {})["thread_id"]
    data = tmp_path / "upload.jsonl"
    data.write_bytes((REPO / "data" / "sample_seed.jsonl").read_bytes())

    def run(save: str, **changes) -> dict:
        run_input = {"data_path": str(data), "train_size": 2, "dev_size": 2, "batch_size": 2, "max_steps": 2,
                     "patience": 5, "candidate_size": 2, "loop": 1, "save_path": str(tmp_path / save),
                     "evol_llm_config": loopback_llm, "optim_llm_config": loopback_llm, **changes}
        return _http("POST", f"{dev_server}/threads/{thread}/runs/wait",
                     {"assistant_id": "autoevol", "input": run_input}, timeout=300) or {}

    first = run("studio")
    assert "__error__" not in first, first
    card = (tmp_path / "studio" / "dataset" / "README.md").read_bytes()
    data.write_bytes((TEST_DATA / "alpaca_tasks.jsonl").read_bytes())  # other rows under the same name
    refused = run("studio")
    assert "changed since this run started (60 rows then, 12 now)" in json.dumps(refused.get("__error__")), refused
    assert (tmp_path / "studio" / "dataset" / "README.md").read_bytes() == card
    second = run("other", max_steps=1)
    assert "__error__" not in second, second
    values = _http("GET", f"{dev_server}/threads/{thread}/state")["values"]
    assert values["step"] == 1 and [h["step"] for h in values["history"]] == [1] and values["rows_in"] == 12
    roots = {json.loads(line)["root_id"] for line in (tmp_path / "other" / "records.jsonl").read_text().splitlines()}
    assert roots and all(root.startswith("task_") for root in roots)
