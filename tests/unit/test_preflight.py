"""Issue 14: every mistake a run's settings can hold is found before the first LLM request.

Each test points the LLM config at a loopback server that counts requests; a check that
came too late would let the run reach it, and the count would not be zero.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO, make_settings
from counting_endpoint import endpoint, run_expecting_error  # noqa: F401 (a fixture)
from run import main
from run_checks import check_run

DISTINCT = ["Describe the water cycle.", "List three uses of copper.", "Write a limerick about cats.",
            "Explain how vaccines work.", "Plan a two-day trip to Busan.", "Compare tea and coffee.",
            "Summarise the plot of Hamlet.", "Give tips for a job interview.", "How do tides form?",
            "Translate 'good morning' into French.", "Why is the sky blue?", "Name five prime numbers.",
            "Draft an apology email to a client.", "Outline a beginner's running plan."]


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


# Issue 18: what a user's flags and files really hold.

def test_an_input_field_that_is_not_text_is_named_with_its_type(endpoint, tmp_path, capsys):
    rows = "".join(json.dumps({"instruction": f"Summarise report {i}.", "n": i}) + "\n" for i in range(14))
    error = run_expecting_error(endpoint, tmp_path, capsys, "--data-path", write(tmp_path / "n.jsonl", rows),
                                "--input-field", "n")
    assert "--input-field 'n' holds int values, not text" in error


def test_repeated_ids_are_kept_renamed_and_said_so(tmp_path, capsys):
    rows = "".join(json.dumps({"id": "same" if i % 2 else f"r{i}", "instruction": text}) + "\n"
                   for i, text in enumerate(DISTINCT))
    seeds = check_run(make_settings(tmp_path, data_path=write(tmp_path / "ids.jsonl", rows)))
    assert len({row["id"] for row in seeds.rows}) == len(DISTINCT)
    notes = [line for line in capsys.readouterr().err.splitlines() if "repeat an earlier row's id" in line]
    assert len(notes) == 1 and f"{len(DISTINCT) // 2 - 1} rows" in notes[0] and "same#3" in notes[0]


def test_split_with_a_local_file_says_it_is_ignored(tmp_path, capsys):
    check_run(make_settings(tmp_path, split="test"))
    assert "--split test is ignored" in capsys.readouterr().err


def test_a_batch_size_above_the_train_size_says_it_is_capped(tmp_path, capsys):
    check_run(make_settings(tmp_path, batch_size=9, train_size=4))
    assert "--batch-size 9 is more than --train-size 4" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "\n# only a comment\n"])
def test_an_empty_rules_file_is_an_error_not_no_rules(endpoint, tmp_path, capsys, content):
    error = run_expecting_error(endpoint, tmp_path, capsys, "--rules", write(tmp_path / "empty_rules.yaml", content))
    assert "--rules" in error and "empty_rules.yaml" in error and "has no rules" in error


def test_a_save_path_in_proc_is_refused_before_the_run(endpoint, tmp_path, capsys):
    error = run_expecting_error(endpoint, tmp_path, capsys, "--save-path", "/proc/autoevol_out", save=False)
    assert "--save-path /proc/autoevol_out" in error and "cannot create files in /proc" in error


def test_a_binary_method_file_is_one_line(endpoint, tmp_path, capsys):
    method = tmp_path / "method.bin"
    method.write_bytes(bytes(range(128, 256)) * 4)
    error = run_expecting_error(endpoint, tmp_path, capsys, "--method-file", str(method))
    assert "--method-file" in error and "not UTF-8 text" in error


def test_a_cache_that_is_not_sqlite_is_named(endpoint, tmp_path, capsys):
    cache = write(tmp_path / "notes.txt", "my notes, not a cache\n")
    error = run_expecting_error(endpoint, tmp_path, capsys, "--cache", cache)
    assert "--cache" in error and "not an SQLite answer cache" in error
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "my notes, not a cache\n"


@pytest.mark.parametrize("content", ["not json {", "[1, 2]", "\xff\xfe"])
def test_a_settings_json_that_no_run_wrote_is_named(endpoint, tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_bytes(content.encode("latin-1"))
    error = run_expecting_error(endpoint, tmp_path, capsys)
    assert "settings.json" in error and "not a run's settings" in error
