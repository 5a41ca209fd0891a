"""Endpoint configuration: presets and YAML files describing one OpenAI-compatible LLM.

An `LLMConfig` names the env variable that holds a key, never the key itself, so a
config can be printed, checkpointed and written to `run.json` without leaking it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from dotenv import find_dotenv, load_dotenv
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from failure_checks.markers import ParseMode
from user_errors import ConfigError

Role = Literal["evol", "optim"]

PRESET_NAMES = ("local", "deepseek", "openai")
# DeepSeek renames its models (deepseek-chat was retired in 2026); the id is
# configuration. Current ids come from langchain-deepseek's model profiles.
DEFAULT_DEEPSEEK_MODEL = "deepseek-v4-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


class LLMConfig(BaseModel):
    """One OpenAI-compatible chat endpoint and how to sample from it."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    """Preset or file this config came from, for logs and run.json."""
    embedded: bool = False
    """True when the tool must start its own llama.cpp server (the `local` preset)."""
    base_url: str | None = None
    """Endpoint root, e.g. https://api.deepseek.com; filled in at start-up for `embedded`."""
    model: str
    """Model id sent to the endpoint."""
    api_key_env: str | None = None
    """Name of the env variable holding the API key; None for keyless local servers."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_tokens: int = 1024
    """Completion cap, always sent as `max_tokens` in the request body."""
    timeout: float = 120.0
    """Seconds before one request is abandoned."""
    max_retries: int = 3
    """Retries of a transient failure before the item becomes a failure."""
    concurrency: int = 8
    """Requests in flight at once against this endpoint."""
    requests_per_second: float | None = None
    """Optional rate limit for this endpoint."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra fields merged into every request body."""
    parse_mode: ParseMode = "strict"
    """`lenient` accepts answers without the final marker (tiny local models)."""
    seed: int | None = None
    """Base sampling seed; sample i of a prompt sends seed+i. None sends no seed."""
    input_price_per_million: float | None = None
    """Optional price in USD per million prompt tokens, for cost reports."""
    output_price_per_million: float | None = None
    """Optional price in USD per million completion tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """USD for these tokens, or None when the config has no prices."""
        if self.input_price_per_million is None and self.output_price_per_million is None:
            return None
        return (input_tokens * (self.input_price_per_million or 0.0)
                + output_tokens * (self.output_price_per_million or 0.0)) / 1e6

    def api_key(self) -> str:
        """The key from the environment, or a one-line ConfigError naming the variable."""
        if not self.api_key_env:
            return "not-needed"
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"LLM config '{self.name}' needs an API key: set {self.api_key_env} "
                "in the environment or in .env"
            )
        return key


def _preset(name: str, role: Role) -> dict[str, Any]:
    # The optimizer samples m candidates, so it needs diversity (paper: 0.6 / 0.95).
    sampling = {"temperature": 0.6, "top_p": 0.95} if role == "optim" else {"temperature": 0.7, "top_p": 0.95}
    if name == "local":
        return {
            "name": "local", "embedded": True, "model": "SmolLM2-135M-Instruct",
            "temperature": 0.6 if role == "optim" else 0.3, "top_p": 0.95,
            "max_tokens": 256, "timeout": 300.0, "max_retries": 2,
            # The embedded server decodes about 2x slower with requests queued.
            "concurrency": 1, "parse_mode": "lenient", "seed": 0,
        }
    if name == "deepseek":
        return {
            "name": "deepseek",
            "base_url": os.environ.get("DEEPSEEK_BASE_URL", "https://api.deepseek.com"),
            "model": os.environ.get("DEEPSEEK_MODEL", DEFAULT_DEEPSEEK_MODEL),
            "api_key_env": "DEEPSEEK_API_KEY", "concurrency": 16, "max_tokens": 2048, **sampling,
        }
    if name == "openai":
        return {
            "name": "openai",
            "base_url": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            "model": os.environ.get("OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            "api_key_env": "OPENAI_API_KEY", "concurrency": 16, "max_tokens": 2048, **sampling,
        }
    raise ConfigError(f"unknown LLM preset '{name}': use one of {', '.join(PRESET_NAMES)} or a YAML file path")


def load_llm_config(preset_or_path: str, role: Role) -> LLMConfig:
    """Build a config from a preset name or a YAML file (which may start from `preset:`)."""
    load_dotenv(find_dotenv(usecwd=True))
    if preset_or_path in PRESET_NAMES:
        return LLMConfig(**_preset(preset_or_path, role))
    path = Path(preset_or_path)
    if not path.is_file():
        raise ConfigError(
            f"LLM config '{preset_or_path}' is neither a preset ({', '.join(PRESET_NAMES)}) nor an existing file"
        )
    try:
        fields = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"{path}: expected a mapping of LLM config fields")
    base = _preset(fields.pop("preset"), role) if "preset" in fields else {}
    try:
        return LLMConfig(**{**base, "name": path.name, **fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def choose_llm_configs(evol: str | None, optim: str | None) -> tuple[LLMConfig, LLMConfig, str]:
    """Resolve the two LLM flags; returns both configs and a one-line note on the choice."""
    load_dotenv(find_dotenv(usecwd=True))
    if evol is None and optim is None:
        chosen = "deepseek" if os.environ.get("DEEPSEEK_API_KEY", "").strip() else "local"
        why = "DEEPSEEK_API_KEY is set" if chosen == "deepseek" else "no DEEPSEEK_API_KEY set"
        note = f"LLM: using the '{chosen}' preset for evolution and optimization ({why})"
        evol = optim = chosen
    else:
        # One flag alone configures both roles: one endpoint is the common case.
        evol, optim = evol or optim, optim or evol
        note = f"LLM: evolution '{evol}', optimization '{optim}'"
    return load_llm_config(evol, "evol"), load_llm_config(optim, "optim"), note

