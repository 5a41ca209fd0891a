"""RunSettings is the one declaration: run.py's flags and Studio's input form follow its fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llm_access.config import LLMConfig
from run import build_parser
from settings import RunSettings, settings_from_inputs
from state import RunInput
from user_errors import ConfigError

FIELDS = RunSettings.model_fields


def typed_name(field: str) -> str:
    """An LLM is typed as a preset name or a file, under `<field>_config`."""
    return f"{field}_config" if FIELDS[field].annotation is LLMConfig else field


def parse(*argv: str) -> RunSettings:
    settings, _ = settings_from_inputs(vars(build_parser().parse_args(list(argv))))
    return settings


def test_every_field_has_a_one_line_docstring():
    for name, info in FIELDS.items():
        assert info.description and "\n" not in info.description, name


def test_the_parser_has_a_flag_per_field_with_its_docstring_as_help():
    actions = {action.dest: action for action in build_parser()._actions}
    for name, info in FIELDS.items():
        action = actions[typed_name(name)]
        assert action.option_strings and action.help == info.description, name


def test_help_shows_every_group_and_the_defaults():
    text = build_parser().format_help()
    for group in ("data:", "optimization:", "diversity:", "LLMs:", "output:"):
        assert f"\n{group}\n" in text
    assert "(default: 42)" in text and "(default: dedup)" in text
    assert "--max-steps MAX_STEPS, --max-step MAX_STEPS" in text and "--rules RULES_PATH" in text


def test_no_flags_give_the_declared_defaults():
    settings = parse("--evol-llm-config", "local")
    expected = RunSettings(evol_llm=settings.evol_llm, optim_llm=settings.optim_llm)
    assert settings == expected and settings.diversity == ["dedup"] and settings.test_run is False


def test_the_special_flags_keep_their_old_forms():
    settings = parse("--max-step", "0", "--rules", "my_rules.yaml", "--test-run", "1", "--diversity",
                     "dedup, breadth", "--equality-check", "--evol-llm-config", "local", "--optim-llm-config", "local")
    assert settings.max_steps == 0 and settings.rules_path == "my_rules.yaml"
    assert settings.test_run is True and settings.equality_check is True
    assert settings.diversity == ["dedup", "breadth"]
    assert settings.evol_llm.embedded and settings.optim_llm.embedded
    assert parse("--test-run", "0", "--evol-llm-config", "local").test_run is False
    assert parse("--test-run", "--evol-llm-config", "local").test_run is True


@pytest.mark.parametrize("argv,flag", [
    (["--max-steps", "-1"], "--max-steps -1"),
    (["--max-step", "-2"], "--max-steps -2"),
    (["--patience", "0"], "--patience 0"),
    (["--candidate-size", "0"], "--candidate-size 0"),
    (["--dedup-threshold", "1.5"], "--dedup-threshold 1.5"),
    (["--breadth-ratio", "-0.1"], "--breadth-ratio -0.1"),
    (["--diversity", " , "], "--diversity"),
])
def test_a_value_outside_the_field_constraints_is_one_line_naming_the_flag(argv, flag):
    with pytest.raises(ConfigError) as error:
        parse(*argv, "--evol-llm-config", "local")
    message = str(error.value)
    assert message.startswith(flag + ":") and "\n" not in message


def test_a_value_argparse_cannot_convert_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--train-size", "six"])
    assert "--train-size" in capsys.readouterr().err


def test_studio_input_schema_is_exactly_the_settings():
    from graph.workflow import graph

    schema = graph.get_input_jsonschema()
    assert set(schema["properties"]) == {typed_name(name) for name in FIELDS}
    for name, info in FIELDS.items():
        assert schema["properties"][typed_name(name)]["description"] == info.description, name
    assert schema["properties"]["train_size"]["minimum"] == 1
    assert schema["properties"]["diversity"]["default"] == "dedup"


def test_studio_defaults_to_a_test_run_in_its_own_folder():
    form = RunInput()
    assert form.test_run is True and form.save_path == "evolution_result/studio"
    assert RunSettings.model_fields["test_run"].default is False


def test_studio_form_builds_the_same_settings_as_the_flags():
    form = RunInput(train_size=4, diversity="dedup,breadth", max_steps=0, evol_llm_config="local")
    from_form, _ = settings_from_inputs(form.model_dump())
    from_flags = parse("--train-size", "4", "--diversity", "dedup,breadth", "--max-steps", "0", "--test-run",
                       "--save-path", "evolution_result/studio", "--evol-llm-config", "local")
    assert from_form == from_flags


def test_studio_form_refuses_a_value_outside_the_constraints():
    with pytest.raises(ValidationError, match="dev_size"):
        RunInput(dev_size=0)


def test_the_workflow_state_no_longer_holds_the_settings():
    from state import WorkflowState

    assert not set(WorkflowState.__dataclass_fields__) & {typed_name(name) for name in FIELDS}


def test_bool_flags_take_nothing_or_zero_or_one(capsys):
    assert parse("--equality-check", "0", "--evol-llm-config", "local").equality_check is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--test-run", "2"])
    assert "--test-run" in capsys.readouterr().err


def test_an_empty_box_in_the_form_leaves_an_optional_setting_unset():
    form = RunInput(input_field="", evol_llm_config="", optim_llm_config="local")
    settings, _ = settings_from_inputs(form.model_dump())
    assert settings.input_field is None and settings.evol_llm.name == settings.optim_llm.name == "local"
