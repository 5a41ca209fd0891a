"""Checks of single files and settings that need none of the run's machinery (nodes, clients).

`run_checks.check_run` composes them with the checks that do need it; the nodes and graph
use `optimizes` to choose their path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from failure_checks.rules import FailureRules
from settings import RunSettings
from user_errors import ConfigError


def optimizes(settings: RunSettings) -> bool:
    """Whether the run optimizes the method (no --method-file, --max-steps above 0)."""
    return settings.method_file is None and settings.max_steps > 0


def load_rules(path: str | None) -> FailureRules:
    """The failure rules, or a one-line error naming --rules (unknown key, broken YAML, missing file)."""
    try:
        rules = FailureRules.load(path)
    except ValueError as exc:
        raise ConfigError(f"--rules: {exc}") from None
    if path is not None and _is_empty_yaml(Path(path)):
        raise ConfigError(f"--rules {path}: has no rules (the file is empty); leave --rules unset for the default "
                          "rules/failure_rules.yaml")
    return rules


def _is_empty_yaml(path: Path) -> bool:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) is None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # FailureRules.load has read it already; only emptiness is asked here


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
    try:  # permission bits are not the whole story (/proc, read-only mounts): try it
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create files in {existing} ({exc.strerror})") from None


def check_writable_file(flag: str, path: Path) -> None:
    """`path` is a file we can write, or can be created as one."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: is not writable")
    check_writable_directory(flag, path.parent)


SQLITE_HEADER = b"SQLite format 3\0"


def check_cache_file(path: Path) -> None:
    """--cache names an SQLite file (or none yet) that can be written."""
    check_writable_file("--cache", path)
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise ConfigError(f"--cache {path}: is not an SQLite answer cache (it holds something else); "
                                  "name a new file or an earlier run's llm_cache.sqlite")


def check_save_path(directory: Path) -> None:
    """--save-path can be written, and any settings.json in it is one a run wrote (a JSON object)."""
    check_writable_directory("--save-path", directory)
    saved = directory / "settings.json"
    if not saved.is_file():
        return
    try:
        settings = json.loads(saved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        settings = None
    if not isinstance(settings, dict):
        raise ConfigError(f"--save-path {directory}: {saved} is not a run's settings (not a JSON object); "
                          "move it away or use another --save-path")
