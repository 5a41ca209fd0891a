"""Running run.py as a user does, and checking that an error is one line."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def run_cli(*args, env_extra=None, timeout=900):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("DEEPSEEK_API_KEY", None)
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)



def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in error_lines[0]
