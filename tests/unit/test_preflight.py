"""Issue 14: every mistake a run's settings can hold is found before the first LLM request.

Each test points the LLM config at a loopback server that counts requests; a check that
came too late would let the run reach it, and the count would not be zero.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO
from run import main


class CountingServer:
    """An OpenAI-shaped endpoint on 127.0.0.1 that only counts requests (and answers 401: no retries)."""

    def __init__(self):
        counter = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                counter.requests += 1
                self.send_response(401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    server = CountingServer()
    config = tmp_path / "counting.yaml"
    config.write_text(f"preset: openai\nbase_url: {server.base_url}\napi_key_env: COUNTING_KEY\nmax_retries: 0\n")
    monkeypatch.setenv("COUNTING_KEY", "x")
    yield server, str(config)
    server.close()


def run_expecting_error(endpoint, tmp_path, capsys, *args, save=True):
    server, config = endpoint
    argv = ["--evol-llm-config", config, "--quiet", *args]
    if save:
        argv += ["--save-path", str(tmp_path / "out")]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert server.requests == 0, "an LLM request was sent before the mistake was found"
    return errors[0]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


STEP_MISTAKES = {
    "no such module": ("no_such_module_xyz:step", "ModuleNotFoundError"),
    "no such function": ("json:no_such_function", "AttributeError"),
    "not async": ("json:dumps", "not an async function"),
    "no function named": ("dedupe", "use dedup, breadth, none"),
}


@pytest.mark.parametrize("mistake", STEP_MISTAKES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_diversity_step_typo_is_found_first(endpoint, tmp_path, capsys, mistake, dry_run):
    step, needle = STEP_MISTAKES[mistake]
    extra = ["--dry-run"] if dry_run else []
    error = run_expecting_error(endpoint, tmp_path, capsys, "--diversity", f"dedup,{step}", *extra)
    assert f"--diversity '{step}'" in error and needle in error


def test_a_step_file_that_does_not_import_is_named(endpoint, tmp_path, capsys):
    plugin = write(tmp_path / "broken_step.py", "async def keep(chunk, context)\n    return chunk\n")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--diversity", f"{plugin}:keep")
    assert "broken_step.py:keep" in error and "SyntaxError" in error


@pytest.mark.parametrize("content,needle", [
    ("evolution: {thresholds: {max_char: 5}}\n", "unknown key 'max_char'"),
    ("evolution: [unclosed\n", "invalid YAML"),
    ("method: {required: [{reason: x}]}\n", "method.required[0]"),
    (None, "cannot read rules file"),
])
def test_a_bad_rules_file_is_one_line_naming_rules(endpoint, tmp_path, capsys, content, needle):
    rules = tmp_path / "my_rules.yaml"
    if content is not None:
        rules.write_text(content)
    error = run_expecting_error(endpoint, tmp_path, capsys, "--rules", str(rules))
    assert error.startswith("error: --rules") and "my_rules.yaml" in error and needle in error


def test_a_save_path_that_is_a_file(endpoint, tmp_path, capsys):
    existing = write(tmp_path / "results.txt", "not a directory")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--save-path", existing, save=False)
    assert "--save-path" in error and "existing file" in error


def test_a_save_path_below_a_file(endpoint, tmp_path, capsys):
    existing = write(tmp_path / "results.txt", "not a directory")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--save-path", f"{existing}/run1", save=False)
    assert "--save-path" in error and "is a file" in error


def test_a_cache_that_is_a_directory(endpoint, tmp_path, capsys):
    error = run_expecting_error(endpoint, tmp_path, capsys, "--cache", str(tmp_path))
    assert "--cache" in error and "is a directory" in error


@pytest.mark.parametrize("args,needle", [
    (["--method-file", "no_such_method.txt"], "--method-file"),
    (["--data-path", "no_such_data.jsonl"], "--data-path"),
    (["--instruction-field", "prompt"], "--instruction-field 'prompt'"),
    (["--train-size", "50", "--dev-size", "50"], "--dev-size 50"),
    (["--dev-size", "3", "--min-improvement", "4"], "--min-improvement 4"),
])
def test_data_method_and_later_settings_are_checked_first(endpoint, tmp_path, capsys, args, needle):
    error = run_expecting_error(endpoint, tmp_path, capsys, *args)
    assert needle in error


def test_the_checks_leave_no_output_directory_behind(endpoint, tmp_path, capsys):
    run_expecting_error(endpoint, tmp_path, capsys, "--diversity", "json:dumps")
    assert not (tmp_path / "out").exists()


def test_a_broken_rules_file_from_the_command_line_has_no_traceback(tmp_path):
    rules = tmp_path / "broken.yaml"
    rules.write_text("evolution: [unclosed\n")
    assert_one_line_error(run_cli("--rules", str(rules), "--dry-run"), "--rules", "broken.yaml", "invalid YAML")


def test_dry_run_still_prints_the_plan_when_all_is_well(tmp_path, capsys):
    assert main(["--dry-run", "--save-path", str(tmp_path / "out"), "--rules",
                 str(REPO / "rules" / "failure_rules.yaml")]) == 0
    assert "total" in capsys.readouterr().out


def test_the_counting_endpoint_does_see_a_run_that_passes_the_checks(endpoint, tmp_path, capsys):
    """The control: without a mistake the run reaches the endpoint, so a zero above means something."""
    server, config = endpoint
    main(["--evol-llm-config", config, "--quiet", "--save-path", str(tmp_path / "out")])
    assert server.requests > 0
