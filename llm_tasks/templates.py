"""Prompt templates: one file per task in prompts/, filled by named placeholders."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The text of prompts/<name>.txt."""
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8")


def fill(name: str, **values: str) -> str:
    """Fill named placeholders in one pass, so braces inside values stay untouched."""
    text = template(name)
    missing = set(_PLACEHOLDER.findall(text)) - values.keys()
    if missing:
        raise KeyError(f"prompts/{name}.txt needs {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def initial_method() -> str:
    """e0, the universal evolving method every run starts from."""
    return template("initial_method").strip()

