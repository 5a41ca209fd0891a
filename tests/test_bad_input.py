"""What a user gets for bad input or bad configuration: one line, or a recorded per-row failure."""

from __future__ import annotations

import json
import subprocess

import pytest

from fault_proxy import FaultProxy, RunningProxy
from local_server import free_port
from test_cli import _assert_one_line_error, run_cli


def test_unknown_preset(tmp_path):
    _assert_one_line_error(run_cli("--evol-llm-config", "gpt5-turbo", "--save-path", str(tmp_path)), "gpt5-turbo")


def test_malformed_yaml(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("model: [unclosed\n")
    _assert_one_line_error(run_cli("--evol-llm-config", str(config), "--save-path", str(tmp_path / "o")),
                           "broken.yaml", "not valid YAML")


@pytest.mark.parametrize("flag,value", [("--train-size", "0"), ("--batch-size", "-3"), ("--loop", "0")])
def test_zero_or_negative_sizes(flag, value):
    result = run_cli(flag, value)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr


def test_unreachable_endpoint_ends_the_run_in_one_line(tmp_path):
    config = tmp_path / "nowhere.yaml"
    config.write_text(f"preset: openai\nbase_url: http://127.0.0.1:{free_port()}/v1\napi_key_env: NOWHERE_KEY\n"
                      "timeout: 5\nmax_retries: 2\n")
    result = run_cli("--evol-llm-config", str(config), "--save-path", str(tmp_path / "o"),
                     env_extra={"NOWHERE_KEY": "x"}, timeout=120)
    _assert_one_line_error(result, "cannot reach")


def test_wrong_api_key_ends_the_run_naming_the_variable(tmp_path):
    with RunningProxy(FaultProxy("http://unused", rate=1.0, faults=("unauthorized",))) as running:
        config = tmp_path / "wrongkey.yaml"
        config.write_text(f"preset: openai\nbase_url: {running.base_url}\napi_key_env: MY_PROVIDER_KEY\n")
        result = run_cli("--evol-llm-config", str(config), "--save-path", str(tmp_path / "o"),
                         env_extra={"MY_PROVIDER_KEY": "sk-wrong"})
        requests = running.proxy.requests
    _assert_one_line_error(result, "401", "MY_PROVIDER_KEY")
    assert requests <= 4  # calls in flight when the first 401 came back; none retried


@pytest.mark.integration
def test_no_secret_value_is_written_anywhere(tmp_path, embedded):
    secret = "sk-autoevol-test-0123456789abcdefSECRET"
    upstream = embedded.base_url.removesuffix("/v1")
    with RunningProxy(FaultProxy(upstream, rate=0.0)) as running:
        config = tmp_path / "keyed.yaml"
        config.write_text(f"preset: local\nembedded: false\nbase_url: {running.base_url}\napi_key_env: AUTOEVOL_KEY\n")
        out = tmp_path / "out"
        result = run_cli("--evol-llm-config", str(config), "--max-steps", "0", "--loop", "1", "--test-run", "1",
                         "--save-path", str(out), env_extra={"AUTOEVOL_KEY": secret})
        sent = running.proxy.authorization_headers
    assert result.returncode == 0, result.stderr[-1500:]
    assert sent and all(header == f"Bearer {secret}" for header in sent)  # the key was really used
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"records.jsonl", "run.json", "checkpoints.sqlite", "llm_cache.sqlite"} <= {p.name for p in written}
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stdout + result.stderr
    assert json.loads((out / "run.json").read_text())["settings"]["evol_llm"]["api_key_env"] == "AUTOEVOL_KEY"
