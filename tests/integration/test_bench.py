"""The benchmark script runs end to end on tiny sizes (figures are its job, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.integration
def test_bench_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "bench/run_bench.py", "--sizes", "30,60", "--saturation-tasks", "2",
                             "--rounds", "1", "--peer", "gather", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert [row["rows"] for row in figures["overhead"]] == [30, 60]
    assert all(row["accounting_holds"] and row["calls"] > 0 for row in figures["overhead"])
    saturation = figures["saturation"]
    assert saturation["ratio"] > 0 and 0 < saturation["endpoint_busy"] <= 1
    # The bare client replays exactly the pipeline's requests: greedy answers, about the same tokens.
    assert saturation["requests"] >= 4
    assert abs(saturation["bare"]["tokens"] - saturation["pipeline"]["tokens"]) <= 0.15 * saturation["pipeline"]["tokens"]
    assert figures["peer"]["peer"] == "asyncio.gather baseline" and figures["peer"]["peer_tokens"] > 0
    assert "peak RSS growth" in result.stdout and "saturation" in result.stdout
