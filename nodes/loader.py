"""Loader: reads the input data once and fixes the train and dev sets."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from failure_checks.preflight import optimizes
from user_errors import ConfigError
from record_store.loading import generation_rows, read_seed_set, split_train_dev
from resources import run_settings, start_resources, timed
from state import Case, RunInput, WorkflowState
from llm_tasks.templates import initial_method


def _cases(rows: list[dict]) -> list[Case]:
    return [Case(case_id=i, row_id=row["id"], instruction=row["instruction"]) for i, row in enumerate(rows)]


def starting_method(method_file: str | None) -> tuple[str, str]:
    """The method the run starts from and its id: e0, or the --method-file's text as "file"."""
    if method_file is None:
        return initial_method(), "e0"
    path = Path(method_file)
    if path.is_dir():
        raise ConfigError(f"--method-file {method_file}: is a directory; name a text file (e.g. a run's method.txt)")
    try:
        text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--method-file {method_file}: not UTF-8 text (byte {exc.start}); a method is a text file "
                          "such as a run's method.txt") from None
    if not text:
        raise ConfigError(f"--method-file {method_file}: no such file, or it is empty")
    return text, "file"


@timed("load")
async def load_data(state: RunInput, config: RunnableConfig) -> dict:
    """Reads Studio's run input (if any) and the data file; writes seeds.jsonl and refusals; sets train, dev, method."""
    # Reading a dataset (and, from Studio, starting the embedded server) blocks: keep it off the loop.
    return await asyncio.to_thread(_load, state, config)


def fresh_run_state() -> dict:
    """Every field of the workflow state at its start value: a new run on a Studio thread that ran before
    must not inherit the last run's step, level, history or scores (input only updates the keys it names).
    Reduced lists take None, which their reducer reads as "clear"; phase_times restarts with the load phase."""
    reset = {}
    for item in dataclasses.fields(WorkflowState):
        if item.name == "phase_times":
            continue
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        reset[item.name] = None if item.name in ("feedback", "candidates", "scores") else default
    return reset


def _load(state: RunInput, config: RunnableConfig) -> dict:
    settings = run_settings(state, config)
    seed_set = read_seed_set(settings)
    resources = start_resources(state, config, seed_set)
    store = resources.store
    method, method_id = starting_method(settings.method_file)
    train, dev = split_train_dev(seed_set.rows, settings) if optimizes(settings) else ([], [])
    seeds = generation_rows(seed_set.rows, settings)
    store.write_input(seeds, seed_set.refused)
    return {
        **fresh_run_state(),
        "rows_in": len(seed_set.rows) + len(seed_set.refused),
        "seed_count": len(seeds),
        "train": _cases(train),
        "dev": _cases(dev),
        "method": method,
        "method_id": method_id,
        "level_spans": {"0": [0, store.size(store.seeds_path)]},
        # Level 0 is the input: every row is a seed, a refusal, or left out by --test-run.
        "level_counts": {"0": {"parents": len(seed_set.rows) + len(seed_set.refused), "records": len(seeds),
                               "failures": len(seed_set.refused), "skipped": len(seed_set.rows) - len(seeds)}},
    }
