"""The settings of one run: what it reads, how hard it optimizes, where it writes.

`RunSettings` is the one declaration of every setting. run.py's flags and Studio's
input form are derived from its fields (`setting_inputs`): the type, the default,
and the help, which is the field's docstring.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Mapping, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from user_errors import ConfigError

from llm_access.config import LLMConfig, choose_llm_configs


@dataclass(frozen=True)
class Flag:
    """Where a setting sits on the command line."""

    group: str
    """Section of `run.py --help` that lists it."""
    names: tuple[str, ...] = ()
    """Its flags when not `--field-name`; the first names it in error messages."""


class RunSettings(BaseModel):
    """Everything that decides what a run computes; stored in run.json and checked on resume."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data_path: Annotated[str, Flag("data")] = "data/sample_seed.jsonl"
    """HF dataset name, or a local .json/.jsonl/.csv/.parquet file."""
    split: Annotated[str, Flag("data")] = "train"
    """Split of a HF dataset."""
    instruction_field: Annotated[str, Flag("data")] = "instruction"
    """Column holding the instruction."""
    input_field: Annotated[str | None, Flag("data")] = None
    """Optional Alpaca-style input column, appended to the instruction."""
    response_field: Annotated[str | None, Flag("data")] = None
    """Optional column with the original answer, kept as 'reference'."""
    seed: Annotated[int, Flag("data")] = 42
    """Shuffle and mini-batch sampling seed."""
    train_size: Annotated[int, Field(ge=1), Flag("data")] = 6
    """Rows (after shuffling) the optimizer may draw mini-batches from."""
    dev_size: Annotated[int, Field(ge=1), Flag("data")] = 6
    """Rows, disjoint from train, on which every candidate method is scored."""
    test_run: Annotated[bool, Flag("data")] = False
    """Generate for the first 10 valid rows only."""
    batch_size: Annotated[int, Field(ge=1), Flag("optimization")] = 3
    """Instructions per optimization step (mini-batch; the paper uses 10)."""
    max_steps: Annotated[int, Field(ge=0), Flag("optimization", ("--max-steps", "--max-step"))] = 1
    """Optimization steps at most; 0 generates with the initial method e0."""
    patience: Annotated[int, Field(ge=1), Flag("optimization")] = 2
    """Stop after this many steps without a strictly better method."""
    candidate_size: Annotated[int, Field(ge=1), Flag("optimization")] = 2
    """Candidate methods (m) sampled per step."""
    min_improvement: Annotated[int, Field(ge=1), Flag("optimization")] = 1
    """Dev items a candidate must fail fewer than the kept method to replace it (1: the paper's rule); --selection exact and full."""
    selection: Annotated[str, Field(pattern="^(auto|race|exact|full)$"), Flag("optimization")] = "auto"
    """How a step's candidates are validated: auto (race with a dev set of 50 items or more, exact below), exact (the paper's rule; a candidate stops once it can no longer win, the same decision with fewer calls), race (every candidate on a heat of a fifth of the dev pool, the best of it on to the end; each compared with the kept method item by item and adopted only once an alpha-spending sign test shows it better; when none is, the next step revises the one furthest ahead) or full (the paper's rule: every candidate on every dev item)."""
    selection_confidence: Annotated[float, Field(ge=0.5, lt=1.0), Flag("optimization")] = 0.9
    """race: the confidence a candidate must be shown better with before it replaces the kept method; a candidate that is not better is adopted at most 1 - confidence of the time, however often the race looks."""
    loop: Annotated[int, Field(ge=1), Flag("optimization")] = 2
    """Evolution rounds per trajectory, and generation levels."""
    method_file: Annotated[str | None, Flag("optimization")] = None
    """Skip optimization and generate with this method (e.g. an earlier run's method.txt)."""
    rules_path: Annotated[str | None, Flag("optimization", ("--rules",))] = None
    """Failure-rule YAML; unset uses rules/failure_rules.yaml."""
    failure_judge: Annotated[str, Field(pattern="^(off|dev|all)$"), Flag("optimization")] = "off"
    """Ask the evol LLM to judge what the failure rules pass: off, dev (validation only), all (generation too)."""
    diversity: Annotated[list[str], Flag("diversity")] = Field(default_factory=lambda: ["dedup"])
    """Steps run in order on each level's survivors, comma-separated: dedup, breadth, none, module:function, file.py:function."""
    dedup_threshold: Annotated[float, Field(gt=0.0, le=1.0), Flag("diversity")] = 0.8
    """Character 3-gram Jaccard similarity at or above which two instructions are near-duplicates."""
    breadth_ratio: Annotated[float, Field(ge=0.0, le=1.0), Flag("diversity")] = 0.2
    """Share of each level's survivors that inspire a brand-new instruction (breadth step)."""
    equality_check: Annotated[bool, Flag("diversity")] = False
    """Ask the LLM whether each evolution adds anything over its parent; 'no' eliminates it."""
    evol_llm: Annotated[LLMConfig, Flag("LLMs")]
    """LLM that evolves and answers: a preset (local, deepseek, openai) or a YAML file."""
    optim_llm: Annotated[LLMConfig, Flag("LLMs")]
    """LLM that analyses and optimizes: a preset or a YAML file; if neither is set, deepseek with DEEPSEEK_API_KEY, else local."""
    judge_llm_config: Annotated[str | None, Flag("LLMs")] = None
    """LLM the failure judge asks (with --failure-judge): a preset or a YAML file; unset asks the evol LLM."""
    save_path: Annotated[str, Flag("output")] = "evolution_result"
    """Output directory."""
    keep_reasoning: Annotated[bool, Flag("output")] = False
    """Keep a reasoning model's reasoning of each response: a `reasoning` field in records.jsonl and a column in the dataset."""


class SettingInput(NamedTuple):
    """A setting as a person types it, on the command line or in Studio's input form."""

    field: str
    """The RunSettings field it sets."""
    key: str
    """Its name in the form and argparse's dest: the field name, or `<field>_config` for an LLM."""
    flags: tuple[str, ...]
    group: str
    annotation: Any
    """A scalar type: str, int, float, bool, or one of them or None."""
    default: Any
    help: str
    constraints: list
    """Pydantic constraints of the field (ge, le, ...), for a form to show."""


def setting_inputs() -> list[SettingInput]:
    """Every RunSettings field as typed input: LLMs by preset name or file, lists as comma-separated text."""
    inputs = []
    for name, info in RunSettings.model_fields.items():
        flag = next(item for item in info.metadata if isinstance(item, Flag))
        constraints = [item for item in info.metadata if not isinstance(item, Flag)]
        annotation, default = info.annotation, info.get_default(call_default_factory=True)
        if annotation is LLMConfig:
            annotation, default, name_typed = str | None, None, f"{name}_config"
        elif get_origin(annotation) is list:
            annotation, default, name_typed = str, ",".join(default), name
        else:
            name_typed = name
        flags = flag.names or ("--" + name_typed.replace("_", "-"),)
        inputs.append(SettingInput(name, name_typed, flags, flag.group, annotation, default, info.description,
                                   constraints))
    return inputs


def scalar_type(annotation: Any) -> type:
    """`int` for `int`, `str` for `str | None`: what to convert typed text into."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def settings_from_inputs(values: Mapping[str, Any]) -> tuple[RunSettings, str]:
    """Settings from typed input keyed as `setting_inputs` names them; returns them and a note on the LLMs.

    Raises ConfigError naming the flag of the first value that breaks a field's constraints.
    """
    inputs = setting_inputs()
    fields: dict[str, Any] = {}
    for typed in inputs:
        value = values.get(typed.key, typed.default)
        if value == "" and type(None) in get_args(typed.annotation):  # a form's empty box: not set
            value = None
        if get_origin(RunSettings.model_fields[typed.field].annotation) is list and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
            if not value:
                raise ConfigError(f"{typed.flags[0]}: name at least one step, or none")
        fields[typed.field] = value
    evol, optim, note = choose_llm_configs(fields.pop("evol_llm"), fields.pop("optim_llm"))
    try:
        return RunSettings(**fields, evol_llm=evol, optim_llm=optim), note
    except ValidationError as exc:
        problem = exc.errors()[0]
        typed = next(typed for typed in inputs if typed.field == problem["loc"][0])
        raise ConfigError(f"{typed.flags[0]} {problem['input']}: {problem['msg']}") from None
