"""Errors that are the user's to fix: each message is one line, naming the flag, file or row."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in configuration; its message is one line meant for the user."""
