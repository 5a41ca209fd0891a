"""run.py as a user runs it: help, one-line errors, refused flags."""

from __future__ import annotations

from cli_helpers import assert_one_line_error, run_cli


def test_help_lists_the_original_flags():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--data-path", "--train-size", "--dev-size", "--seed", "--batch-size", "--max-steps", "--loop",
                 "--candidate-size", "--test-run", "--save-path", "--evol-llm-config", "--optim-llm-config",
                 "--method-file", "--patience", "--instruction-field", "--input-field", "--response-field"):
        assert flag in result.stdout


def test_missing_key_is_one_line_naming_the_variable(tmp_path):
    result = run_cli("--evol-llm-config", "deepseek", "--save-path", str(tmp_path / "o"))
    assert_one_line_error(result, "DEEPSEEK_API_KEY")


def test_bad_numbers_are_refused_by_flag(tmp_path):
    result = run_cli("--dev-size", "0")
    assert result.returncode == 2 and "--dev-size" in result.stderr and "Traceback" not in result.stderr


def test_max_step_alias_is_accepted(tmp_path):
    from run import build_parser

    assert build_parser().parse_args(["--max-step", "4"]).max_steps == 4
