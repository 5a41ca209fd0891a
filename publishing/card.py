"""The dataset card (README.md of the dataset folder): Hub metadata and the run's provenance.

The prose lives in card_template.md (Jinja2); this module turns run.json and the folder's contents
into the values it shows. Settings name env variables, never keys; `scrub` removes any secret
value that found its way into the text anyway (a key pasted into extra_body or a URL).
"""

from __future__ import annotations

import json
from collections import Counter
import os
import re
import shlex
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from llm_access.config import PRESET_NAMES
from publishing.dataset_folder import FolderContents, level_path
from run_report.metrics import format_table
from settings import setting_inputs

TEMPLATE = Path(__file__).with_name("card_template.md")
PAPER = "arXiv:2406.00770"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
SAMPLE_CHARS = 1500
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
# Flags whose name is not the settings field's name with dashes.
NOT_IN_COMMAND = {"evol_llm", "optim_llm", "save_path"}
PATH_SETTINGS = ("data_path", "method_file", "rules_path")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
UNPUBLISHED_URL = "<endpoint URL, not published>"


def _is_local_path(value: str) -> bool:
    # A hub dataset id ("org/name") has no file extension and is not absolute or relative to "."
    path = Path(value)
    return path.is_absolute() or value.startswith(".") or bool(path.suffix) or path.exists()


def _without_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_urls(item) for key, item in value.items() if key not in ("base_url", "url")}
    if isinstance(value, list):
        return [_without_urls(item) for item in value]
    return URL.sub(UNPUBLISHED_URL, value) if isinstance(value, str) else value


def public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as a card may show them: no save path, a local file by its base name only, and no
    endpoint URL (an internal host name is nobody else's business); models are named by their id."""
    public = {key: value for key, value in settings.items() if key != "save_path"}
    for key in PATH_SETTINGS:
        if isinstance(public.get(key), str) and _is_local_path(public[key]):
            public[key] = Path(public[key]).name
    public["diversity"] = [f"{Path(module).name}:{function}" if module.endswith(".py") else step
                           for step in public.get("diversity") or [] for module, _, function in [step.partition(":")]]
    for key in ("evol_llm", "optim_llm"):
        config = _without_urls(public[key])
        if config["name"] not in PRESET_NAMES:
            config["name"] = Path(config["name"]).name
        public[key] = config
    return public


def scrub(text: str) -> str:
    """The text without credentials in URLs or values of secret-looking env variables."""
    text = URL_CREDENTIALS.sub("", text)
    for name, value in os.environ.items():
        if SECRET_NAME.search(name) and len(value.strip()) >= 8:
            text = text.replace(value.strip(), "<redacted>")
    return text


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>1T")


def card_metadata(contents: FolderContents, license_id: str | None) -> DatasetCardData:
    """The YAML header: licence, languages, size, task, tags and one config per level plus `default`."""
    levels = contents.levels_with_rows
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": [level_path(n) for n in levels]}]},
               *({"config_name": f"level_{n}", "data_files": [{"split": "train", "path": level_path(n)}]}
                 for n in levels)] if levels else None
    return DatasetCardData(license=license_id or "unknown", language=contents.languages or None,
                           size_categories=[size_category(contents.total_rows)], task_categories=["text-generation"],
                           tags=["synthetic", "auto-evol-instruct"], configs=configs)


def reproduce_command(settings: dict[str, Any], license_id: str | None) -> str:
    """The run.py command that runs these settings again (LLM configs by preset or file name)."""
    words = ["python", "run.py"]
    for setting in setting_inputs():
        name, flag, value = setting.field, setting.flags[0], settings.get(setting.field)
        if name in NOT_IN_COMMAND or value is None or value is False:
            continue
        if value is True:
            words += [flag]
        else:
            words += [flag, (",".join(value) or "none") if isinstance(value, list) else str(value)]
    words += ["--evol-llm-config", settings["evol_llm"]["name"], "--optim-llm-config", settings["optim_llm"]["name"]]
    if license_id:
        words += ["--license", license_id]
    return " ".join(shlex.quote(word) for word in words)


def model_rows(settings: dict[str, Any]) -> list[dict]:
    rows = []
    for role, key in (("evolves and answers", "evol_llm"), ("analyses and optimizes", "optim_llm")):
        config = settings[key]
        endpoint = "embedded llama.cpp server" if config.get("embedded") else "an OpenAI-compatible API"
        rows.append({"role": role, "config": config["name"], "is_file": config["name"] not in PRESET_NAMES,
                     "model": config["model"], "endpoint": endpoint, "temperature": config.get("temperature"),
                     "max_tokens": config.get("max_tokens")})
    return rows


def _score_cells(score: dict | None) -> tuple[str, str]:
    if not score:
        return "not scored", "-"
    gain = score.get("complexity_gain")
    return f"{score['failure_rate']:.3f}", "-" if gain is None else f"{gain:.2f}"


def history_rows(run: dict) -> list[dict]:
    """One row per scored method: e0 first, then every candidate of every step."""
    rows = []
    if run.get("e0_score"):
        rate, gain = _score_cells(run["e0_score"])
        rows.append({"step": 0, "method_id": "e0", "parse": "-", "rate": rate, "gain": gain, "outcome": "initial method"})
    for step in run.get("history") or []:
        for candidate in step.get("candidates", []):
            rate, gain = _score_cells(candidate.get("score"))
            kept = candidate["method_id"] == step.get("kept_method_id")
            rows.append({"step": step["step"], "method_id": candidate["method_id"], "parse": candidate.get("parse", "-"),
                         "rate": rate, "gain": gain, "outcome": "kept" if kept else "-"})
    return rows


def level_rows(run: dict, contents: FolderContents) -> list[dict]:
    """Per level: items in, items a breadth step added, rows, eliminations and their reasons."""
    rows = []
    for level, counts in sorted(run["counts"]["levels"].items(), key=lambda kv: int(kv[0])):
        reasons = contents.failures_per_level.get(int(level), Counter())
        rows.append({"level": "input" if level == "0" else level, "parents": counts.get("parents", 0),
                     "added": counts.get("added", 0),
                     "rows": counts.get("records", 0) if level == "0" else contents.rows_per_level.get(int(level), 0),
                     "failures": counts.get("failures", 0),
                     "reasons": ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common()) or "-"})
    return rows


def usage_rows(run: dict) -> list[dict]:
    return [{"task": task, **{key: usage.get(key, 0) for key in
                              ("requests", "cached_calls", "input_tokens", "output_tokens",
                               "cached_input_tokens", "reasoning_tokens")}}
            for task, usage in sorted((run.get("token_usage") or {}).items())]


def fence(text: Any) -> str:
    """A Markdown code block that no backtick run inside the text can close; long texts are cut."""
    text = str(text)
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS] + f" … [{len(text) - SAMPLE_CHARS} more characters]"
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{ticks}text\n{text}\n{ticks}"


def render_card(run: dict, contents: FolderContents, license_id: str | None, repo_id: str | None = None) -> str:
    """README.md of the dataset folder; local paths and endpoint URLs stay out of it (see public_settings)."""
    settings = public_settings(run["settings"])
    usage = usage_rows(run)
    card = DatasetCard.from_template(
        card_metadata(contents, license_id), template_path=str(TEMPLATE), run=run, settings=settings,
        contents=contents, license_id=license_id, repo_id=repo_id or "path/to/dataset", paper=PAPER,
        models=model_rows(settings), history=history_rows(run), levels=level_rows(run, contents),
        quality_table=format_table(run.get("quality") or {}), usage=usage,
        total_tokens=sum(u["input_tokens"] + u["output_tokens"] for u in usage),
        command=reproduce_command(settings, license_id), fence=fence)
    return scrub(str(card)) + "\n"


def shareable_settings(run: dict, license_id: str | None) -> dict:
    """run_settings.json: what the run computed with, for people who reuse the data (no secrets)."""
    shared = {"tool": "autoevol", "paper": PAPER, "license": license_id, "method_id": run.get("method_id"),
              "settings": public_settings(run["settings"])}
    return json.loads(scrub(json.dumps(shared, ensure_ascii=False)))
