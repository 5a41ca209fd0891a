"""What a user gets for bad input or bad configuration: one line, or a recorded per-row failure."""

from __future__ import annotations

import json
import subprocess

import pytest

from fault_proxy import FaultProxy, RunningProxy
from llm_access.embedded_server import free_port
from cli_helpers import assert_one_line_error, run_cli


def test_unknown_preset(tmp_path):
    assert_one_line_error(run_cli("--evol-llm-config", "gpt5-turbo", "--save-path", str(tmp_path)), "gpt5-turbo")


def test_malformed_yaml(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("model: [unclosed\n")
    assert_one_line_error(run_cli("--evol-llm-config", str(config), "--save-path", str(tmp_path / "o")),
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
    assert_one_line_error(result, "cannot reach")


def test_wrong_api_key_ends_the_run_naming_the_variable(tmp_path):
    with RunningProxy(FaultProxy("http://unused", rate=1.0, faults=("unauthorized",))) as running:
        config = tmp_path / "wrongkey.yaml"
        config.write_text(f"preset: openai\nbase_url: {running.base_url}\napi_key_env: MY_PROVIDER_KEY\n")
        result = run_cli("--evol-llm-config", str(config), "--save-path", str(tmp_path / "o"),
                         env_extra={"MY_PROVIDER_KEY": "sk-wrong"})
        requests = running.proxy.requests
    assert_one_line_error(result, "401", "MY_PROVIDER_KEY")
    # Calls in flight when the first 401 came back, none retried: the first step's 3 trajectories
    # and, beside them since issue 21, e0's 6 dev items.
    assert requests <= 3 + 6
