"""Before the first real call, each endpoint is probed: a wrong path, model, key or status stops the run in one line.

Every case runs run.py as a user does against a simulated endpoint on 127.0.0.1 (tests/chat_server.py
in a thread) that counts what it was sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chat_server import ServerShapes, ServerThread, shaped_answer
from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO


def llm_file(tmp_path: Path, base_url: str, name: str = "llm.yaml", **fields) -> str:
    config = {"base_url": base_url, "model": "served-model", "concurrency": 2, "max_retries": 1, "timeout": 10,
              "max_tokens": 256, **fields}
    config = {name: value for name, value in config.items() if value is not None}  # None: the field's default
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


def run_against(tmp_path: Path, config: str, *extra: str, env_extra=None):
    return run_cli("--evol-llm-config", config, "--save-path", str(tmp_path / "out"), "--data-path",
                   str(REPO / "data" / "sample_seed.jsonl"), "--max-steps", "1", "--quiet", *extra,
                   env_extra=env_extra, timeout=300)


def assert_stopped_before_any_row(tmp_path: Path, server, result, *needles: str) -> None:
    assert_one_line_error(result, *needles)
    assert result.returncode == 2
    assert server.received <= 5, f"{server.received} requests before the stop"
    out = tmp_path / "out"
    assert not (out / "records.jsonl").exists() and not (out / "failures.jsonl").exists()


@pytest.mark.parametrize("case", ["no_v1", "unknown_model_listed", "unknown_model_unlisted", "400", "403"])
def test_a_wrong_endpoint_stops_the_run_in_one_line_before_any_row(tmp_path, case):
    shapes = {
        "no_v1": ServerShapes(strict_path=True),
        "unknown_model_listed": ServerShapes(models=("other-model",)),
        "unknown_model_unlisted": ServerShapes(models=("other-model",), models_route=False),
        "400": ServerShapes(chat_status=400),
        "403": ServerShapes(chat_status=403),
    }[case]
    with ServerThread(answer=shaped_answer, shapes=shapes) as server:
        url = server.base_url.removesuffix("/v1") if case == "no_v1" else server.base_url
        result = run_against(tmp_path, llm_file(tmp_path, url))
    print(f"\n[{case}] {server.received} requests: {result.stderr.strip().splitlines()[-1]}")
    status = {"no_v1": "404", "unknown_model_unlisted": "404", "400": "400", "403": "403"}.get(case)
    needles = ["evol LLM", url] + ([f"HTTP {status}"] if status else ["does not list model 'served-model'", "other-model"])
    assert_stopped_before_any_row(tmp_path, server, result, *needles)


def test_a_refused_key_still_names_the_variable(tmp_path):
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(chat_status=401)) as server:
        config = llm_file(tmp_path, server.base_url, api_key_env="PROBE_TEST_KEY")
        result = run_against(tmp_path, config, env_extra={"PROBE_TEST_KEY": "wrong-key-value"})
    assert_stopped_before_any_row(tmp_path, server, result, "401", "PROBE_TEST_KEY", server.base_url)
    assert "wrong-key-value" not in result.stderr + result.stdout


def test_each_role_is_probed_and_the_optimizer_endpoint_is_named(tmp_path):
    with ServerThread(answer=shaped_answer) as good, \
            ServerThread(answer=shaped_answer, shapes=ServerShapes(strict_path=True)) as bad:
        evol = llm_file(tmp_path, good.base_url, "evol.yaml")
        optim = llm_file(tmp_path, bad.base_url.removesuffix("/v1"), "optim.yaml")
        result = run_against(tmp_path, evol, "--optim-llm-config", optim)
    assert_stopped_before_any_row(tmp_path, bad, result, "optim LLM", "HTTP 404")
    assert good.received <= 2 and good.chat_requests <= 1


def test_a_server_without_models_route_passes_and_the_probe_is_counted(tmp_path):
    with ServerThread(answer=shaped_answer) as server:  # the default simulated server has no /v1/models
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url), "--max-steps", "0", "--train-size", "2",
                             "--dev-size", "2", "--loop", "1", "--test-run")
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    probe = run["token_usage"]["probe"]
    assert probe["requests"] == 1 and probe["calls"] == 1 and probe["input_tokens"] > 0
    sent = sum(usage["requests"] for usage in run["token_usage"].values())
    assert sent == server.chat_requests and server.received == sent + 1, (sent, server.received)  # + GET /v1/models


def test_a_server_that_lists_other_names_but_answers_for_the_model_passes_with_a_note(tmp_path):
    shapes = ServerShapes(models=("/models/file.gguf",), any_model=True)  # as llama.cpp's server does
    with ServerThread(answer=shaped_answer, shapes=shapes) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url), "--max-steps", "0", "--loop", "1",
                             "--test-run")
    assert result.returncode == 0, result.stderr
    assert "does not list model 'served-model' but answers for it" in result.stderr


def test_a_transient_error_on_the_probe_is_tried_again_not_a_stop(tmp_path):
    with ServerThread(answer=shaped_answer, shapes=ServerShapes(chat_status=503, fail_until=1)) as server:
        result = run_against(tmp_path, llm_file(tmp_path, server.base_url), "--max-steps", "0", "--loop", "1",
                             "--test-run")
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["token_usage"]["probe"]["requests"] == 2 and run["token_usage"]["probe"]["calls"] == 1
