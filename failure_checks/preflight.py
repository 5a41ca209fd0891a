"""Preflight: every file, module and setting a run names is checked before any server starts or LLM call.

run.py calls `check_run` before a run and for --dry-run. A mistake is a one-line
ConfigError naming its flag, so a typo costs nothing instead of the optimization phase.
"""

from __future__ import annotations

import os
from pathlib import Path

from failure_checks.rules import FailureRules
from record_store.loading import SeedSet, read_seed_set, split_train_dev
from settings import RunSettings
from user_errors import ConfigError


def check_run(settings: RunSettings, cache_path: str | None = None) -> SeedSet:
    """Check the rules, method file, diversity steps, output paths and data; returns the seed set read."""
    from nodes.diversity import BUILT_IN_STEPS, load_step, step_names_of  # the run's machinery: only when checking
    from nodes.loader import starting_method

    load_rules(settings.rules_path)
    if settings.judge_llm_config:
        from llm_access.config import load_llm_config

        load_llm_config(settings.judge_llm_config, "evol")  # a bad --judge-llm-config is one line, before any call
    starting_method(settings.method_file)
    for name in step_names_of(settings):
        if name not in BUILT_IN_STEPS:
            load_step(name)
    check_writable_directory("--save-path", Path(settings.save_path))
    check_writable_file("--cache", Path(cache_path) if cache_path else Path(settings.save_path) / "llm_cache.sqlite")
    seeds = read_seed_set(settings)
    if optimizes(settings):
        split_train_dev(seeds.rows, settings)
        if settings.min_improvement > settings.dev_size:
            raise ConfigError(f"--min-improvement {settings.min_improvement} is more than --dev-size "
                              f"{settings.dev_size}: no candidate could ever replace the method")
    return seeds


def optimizes(settings: RunSettings) -> bool:
    """Whether the run optimizes the method (no --method-file, --max-steps above 0)."""
    return settings.method_file is None and settings.max_steps > 0


def load_rules(path: str | None) -> FailureRules:
    """The failure rules, or a one-line error naming --rules (unknown key, broken YAML, missing file)."""
    try:
        return FailureRules.load(path)
    except ValueError as exc:
        raise ConfigError(f"--rules: {exc}") from None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_directory(flag: str, path: Path) -> None:
    """`path` is a directory we can write into, or can be created as one."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is an existing file, not a directory (name a directory)")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: cannot create it, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


def check_writable_file(flag: str, path: Path) -> None:
    """`path` is a file we can write, or can be created as one."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: is not writable")
    check_writable_directory(flag, path.parent)
