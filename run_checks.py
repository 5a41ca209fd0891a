"""Preflight of a whole run: every file, module and setting it names, checked before any server starts or LLM call.

run.py calls `check_run` before a run and for --dry-run. A mistake is a one-line
ConfigError naming its flag, so a typo costs nothing instead of the optimization phase.

This module sits above `nodes/` (it loads the diversity steps and the starting method the nodes
will use) and below `graph/`, so every entry into the graph can run the same check; the checks
that need no node stay in `failure_checks/preflight.py`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from failure_checks.preflight import check_cache_file, check_save_path, load_rules, optimizes
from nodes.diversity import BUILT_IN_STEPS, load_step, step_names_of
from nodes.loader import starting_method
from record_store.loading import SeedSet, read_seed_set, split_train_dev
from record_store.run_directory import Manifest
from record_store.store import write_atomically
from settings import RunSettings
from user_errors import ConfigError


def check_run(settings: RunSettings, cache_path: str | None = None) -> SeedSet:
    """Check the rules, method file, diversity steps, output paths and data; returns the seed set read.

    Prints one line for each thing done on the user's behalf (an encoding detected, ids renamed, a cap).
    """
    load_rules(settings.rules_path)
    if settings.judge_llm_config:
        from llm_access.config import load_llm_config

        load_llm_config(settings.judge_llm_config, "evol")  # a bad --judge-llm-config is one line, before any call
    starting_method(settings.method_file)
    for name in step_names_of(settings):
        if name not in BUILT_IN_STEPS:
            load_step(name)
    check_save_path(Path(settings.save_path))
    check_cache_file(Path(cache_path) if cache_path else Path(settings.save_path) / "llm_cache.sqlite")
    seeds = read_seed_set(settings)
    for note in seeds.notes:
        print(note, file=sys.stderr)
    if not seeds.rows:
        refuse_unusable_data(settings, seeds)
    forget_refusals_of_a_stopped_check(Path(settings.save_path))
    if optimizes(settings):
        try:
            split_train_dev(seeds.rows, settings)
        except ConfigError as exc:
            refused = f" ({len(seeds.refused)} refused: {_reasons(seeds)})" if seeds.refused else ""
            raise ConfigError(f"{exc}{refused}") from None
        if settings.min_improvement > settings.dev_size:
            raise ConfigError(f"--min-improvement {settings.min_improvement} is more than --dev-size "
                              f"{settings.dev_size}: no candidate could ever replace the method")
        if settings.batch_size > settings.train_size:
            print(f"--batch-size {settings.batch_size} is more than --train-size {settings.train_size}: each step's "
                  f"mini-batch is capped at the {settings.train_size} train rows", file=sys.stderr)
    return seeds


def _holds_no_run(directory: Path) -> bool:
    return not (directory / "settings.json").exists() and not (directory / "checkpoints.sqlite").exists()


def _only_input_refusals(failures: Path) -> bool:
    """Whether a failures.jsonl holds nothing but load-time refusals (what `refuse_unusable_data` writes)."""
    try:
        with open(failures, encoding="utf-8") as handle:
            return all(json.loads(line).get("stage") == "input" for line in handle if line.strip())
    except (OSError, ValueError, AttributeError):
        return False


def _reasons(seeds: SeedSet) -> str:
    counts = Counter(refusal["reason"] for refusal in seeds.refused)
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


def refuse_unusable_data(settings: RunSettings, seeds: SeedSet) -> None:
    """No row can be used: write every refusal to SAVE_PATH/failures.jsonl, then stop with the counts by reason.

    The file is written only into a directory that holds no run, so an earlier run's failures are never replaced.
    """
    if not seeds.refused:
        raise ConfigError(f"--data-path {settings.data_path}: has no rows")
    directory = Path(settings.save_path)
    failures = directory / "failures.jsonl"
    reasons = _reasons(seeds)
    manifest = Manifest(directory)
    ours = not failures.exists() or (manifest.owns(failures.name) and _only_input_refusals(failures))
    if _holds_no_run(directory) and ours:
        manifest.claim(failures.name)  # the tool's file from here on: --overwrite and a later run may remove it
        write_atomically(failures, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in seeds.refused))
        where = f"; see {failures}"
    else:
        where = f" (not written to {failures}: {directory} holds an earlier run)"
    raise ConfigError(f"--data-path {settings.data_path}: all {len(seeds.refused)} rows were refused: "
                      f"{reasons}{where}")


def forget_refusals_of_a_stopped_check(directory: Path) -> None:
    """Remove the failures.jsonl `refuse_unusable_data` left in a directory where no run has started since.

    The data now has usable rows and the run will write its own refusals at load; the old ones would count twice.
    """
    failures = directory / "failures.jsonl"
    if _holds_no_run(directory) and failures.is_file() and Manifest(directory).owns(failures.name) \
            and _only_input_refusals(failures):
        failures.unlink()
