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
    assert_one_line_error(result, "gave no answer", "check base_url")  # the probe, before any row


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


def test_a_cp949_csv_from_excel_is_read_by_the_real_command(tmp_path):
    """Issue 18: a cp949 export was `cannot be read (DatasetGenerationError)`; now it loads and says how."""
    rows = ["서울의 겨울 날씨를 설명하세요.", "김치찌개 끓이는 법을 알려 주세요.", "광합성이 무엇인지 설명하세요.",
            "조선 시대의 과거 제도를 요약하세요.", "한강의 다리 다섯 개를 나열하세요.", "운동이 건강에 좋은 이유를 쓰세요.",
            "태양계 행성을 크기 순서로 말해 주세요.", "한글을 만든 사람과 그 이유를 설명하세요.", "커피와 녹차를 비교하세요.",
            "지하철 노선도를 읽는 요령을 알려 주세요.", "봄에 피는 꽃 네 가지를 소개하세요.", "은행 계좌를 여는 절차를 쓰세요."]
    data = tmp_path / "excel.csv"
    data.write_bytes(("instruction\r\n" + "".join(f"{row}\r\n" for row in rows)).encode("cp949"))
    before = data.read_bytes()
    result = run_cli("--data-path", str(data), "--save-path", str(tmp_path / "o"), "--dry-run")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "read as cp949" in result.stderr and "(12 instructions in the generation set" in result.stdout
    assert data.read_bytes() == before
