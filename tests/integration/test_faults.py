"""A run through a faulty endpoint completes, loses nothing, and bounds its retries."""

from __future__ import annotations

import json

import pytest

from fault_proxy import FaultProxy, RunningProxy
from cli_helpers import run_cli

pytestmark = pytest.mark.integration


def test_run_completes_with_20_percent_of_requests_faulted(tmp_path, simulated_endpoint):
    # Behind the proxy, the simulated endpoint: its answers are whole and pass the rules, so every
    # failure here is one of the proxy's faults, and the run's time is the faults', not a tiny model's.
    upstream = simulated_endpoint.removesuffix("/v1")
    with RunningProxy(FaultProxy(upstream, rate=0.2, seed=7, stall_seconds=12)) as running:
        config = tmp_path / "faulty.yaml"
        config.write_text(
            f"preset: local\nembedded: false\nbase_url: {running.base_url}\nparse_mode: strict\n"
            "timeout: 8\nmax_retries: 3\nmax_tokens: 160\n")
        out = tmp_path / "out"
        result = run_cli("--evol-llm-config", str(config), "--train-size", "2", "--dev-size", "2",
                         "--batch-size", "2", "--max-steps", "1", "--candidate-size", "2", "--loop", "2",
                         "--test-run", "1", "--save-path", str(out))
        proxy = running.proxy
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum(proxy.faults.values()) >= 3, proxy.faults
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["accounting_holds"]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert all(f["reason"] for f in failures)
    usage = run["token_usage"].values()
    logical_calls = sum(u["calls"] - u["cached_calls"] for u in usage)
    assert proxy.requests == sum(u["requests"] for u in usage)
    assert logical_calls < proxy.requests <= logical_calls * (3 + 1)
