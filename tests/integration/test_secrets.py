"""No secret value is ever written: outputs, logs, caches and checkpoints are scanned."""

from __future__ import annotations

import json
import subprocess

import pytest

from cli_helpers import run_cli
from fault_proxy import FaultProxy, RunningProxy


@pytest.mark.integration
def test_no_secret_value_is_written_anywhere(tmp_path, simulated_endpoint):
    # The simulated endpoint, not the embedded model: the tiny model's evolutions rarely pass the rules,
    # and a run that writes no record is not a success; the key's path is the same either way.
    secret = "sk-autoevol-test-0123456789abcdefSECRET"
    upstream = simulated_endpoint.removesuffix("/v1")
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
