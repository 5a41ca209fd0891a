"""Issue 18: a --diversity mistake is one line before any request, not a failure after paid calls."""

from __future__ import annotations

import pytest

from test_preflight import endpoint, run_expecting_error, write  # noqa: F401 (endpoint is a fixture)


def test_none_combined_with_a_step_is_refused(endpoint, tmp_path, capsys):
    error = run_expecting_error(endpoint, tmp_path, capsys, "--diversity", "none,dedup")
    assert "--diversity none,dedup" in error and "'none'" in error


@pytest.mark.parametrize("source", [
    "async def step(items):\n    return items\n",
    "async def step(items, context, extra):\n    return items\n",
    "async def step():\n    return []\n",
])
def test_a_step_with_the_wrong_signature_is_refused_up_front(endpoint, tmp_path, capsys, source):
    plugin = write(tmp_path / "bad_step.py", source)
    error = run_expecting_error(endpoint, tmp_path, capsys, "--diversity", f"dedup,{plugin}:step")
    assert f"--diversity '{plugin}:step'" in error and "async def step(items, context)" in error


def test_a_sync_step_is_refused_up_front(endpoint, tmp_path, capsys):
    plugin = write(tmp_path / "sync_step.py", "def step(items, context):\n    return items\n")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--diversity", f"{plugin}:step")
    assert "not an async function" in error and "async def step(items, context)" in error


def test_a_step_with_optional_extras_is_accepted(tmp_path):
    from nodes.diversity import load_step

    plugin = write(tmp_path / "fine_step.py", "async def step(items, context, *, note=''):\n    return items\n")
    assert load_step(f"{plugin}:step").__name__ == "step"
