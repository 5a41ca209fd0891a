"""run.py as a user runs it, on the embedded model: bad data, a real run, kill -9 and Ctrl+C."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO, TEST_DATA


@pytest.mark.integration
def test_bad_data_is_one_line(tmp_path):
    result = run_cli("--data-path", str(tmp_path / "nope.jsonl"), "--save-path", str(tmp_path / "o"))
    assert_one_line_error(result, "--data-path", "no such file")
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"task {i}"}) + "\n" for i in range(5)))
    result = run_cli("--data-path", str(data), "--train-size", "4", "--dev-size", "4", "--save-path", str(tmp_path / "p"))
    assert_one_line_error(result, "= 8", "only 5")


@pytest.mark.integration
def test_real_run_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    args = ["--data-path", str(TEST_DATA / "alpaca_tasks.jsonl"), "--input-field", "input",
            "--response-field", "output", "--train-size", "2", "--dev-size", "2", "--batch-size", "2",
            "--max-steps", "1", "--candidate-size", "2", "--loop", "2", "--test-run", "1", "--save-path", str(out)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "local" in result.stderr and "dev failure rate (95% interval): e0" in result.stdout
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    levels = run["counts"]["levels"]
    assert levels["0"]["parents"] == 12 and levels["1"]["parents"] == 10
    assert run["counts"]["accounting_holds"]
    assert levels["2"]["parents"] == levels["1"]["records"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(records) == levels["1"]["records"] + levels["2"]["records"]
    assert all(f["reason"] for f in failures)
    step = run["history"][0]
    assert len(step["trajectories"]) == 2 and len(step["candidates"]) == 2
    assert run["e0_score"]["dev_size"] == 2 and run["token_usage"]["evolve"]["output_tokens"] > 0
    assert (out / "method.txt").read_text().strip() == run["method"]
    # Running the finished command again makes no LLM call and changes nothing.
    before = (out / "records.jsonl").read_text()
    again = run_cli(*args)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert (out / "records.jsonl").read_text() == before


@pytest.mark.integration
def test_kill_9_then_the_same_command_resumes_to_the_same_files(tmp_path):
    import signal
    import time

    config = tmp_path / "greedy.yaml"
    config.write_text("preset: local\ntemperature: 0.0\n")
    common = ["--evol-llm-config", str(config), "--max-steps", "0", "--loop", "2", "--test-run", "1",
              "--batch-size", "2"]
    reference = run_cli(*common, "--save-path", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-1500:]

    out = tmp_path / "crash"
    args = [sys.executable, str(REPO / "run.py"), *common, "--save-path", str(out)]
    victim = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once three items are decided (records or failures: the tiny model's evolutions mostly fail the rules).
    decided = [out / "records.jsonl", out / "failures.jsonl"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(p.read_text().count("\n") for p in decided if p.exists()) < 3:
        time.sleep(0.2)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = run_cli(*common, "--save-path", str(out))
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-1500:]
    for name in ("records.jsonl", "failures.jsonl"):
        assert (out / name).read_text() == (tmp_path / "ref" / name).read_text(), name


def _children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            children += [int(c) for c in handle.read().split()]
    return children


@pytest.mark.integration
def test_ctrl_c_stops_the_run_and_the_embedded_server(tmp_path):
    import signal
    import time

    from test_local_server import _alive

    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--save-path", str(out)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    server_pids = []
    while time.monotonic() < deadline and not server_pids:
        server_pids = [p for p in _children(run.pid) if "llama_cpp.server" in open(f"/proc/{p}/cmdline").read()]
        time.sleep(0.2)
    assert server_pids
    time.sleep(3)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert not _alive(server_pids[0])
