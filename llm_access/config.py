"""Endpoint configuration: presets and YAML files describing one OpenAI-compatible LLM.

An `LLMConfig` names the env variable that holds a key, never the key itself, so a
config can be printed, checkpointed and written to `run.json` without leaking it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import yaml
from dotenv import find_dotenv, load_dotenv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from failure_checks.markers import ParseMode
from user_errors import ConfigError

Role = Literal["evol", "optim"]

PRESET_NAMES = ("local", "deepseek", "openai")
# DeepSeek renames its models (deepseek-chat was retired in 2026); the id is
# configuration. Current ids come from langchain-deepseek's model profiles.
DEFAULT_DEEPSEEK_MODEL = "deepseek-v4-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
REASONING_MAX_TOKENS = 8192
"""The default max_tokens of a `reasoning: true` config: a thinking model spends 1024 on thinking alone."""


class EndpointConfig(BaseModel):
    """One server of a pool; unset fields take the LLM config's value."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(min_length=1)
    """Endpoint root, e.g. http://10.0.0.5:8000/v1."""
    api_key_env: str | None = None
    """Env variable holding this endpoint's key; None takes the config's `api_key_env`."""
    concurrency: int | None = Field(default=None, ge=1)
    """Cap on requests in flight here; None takes the config's `concurrency`."""
    weight: float = Field(default=1.0, gt=0)
    """Preference among endpoints with room: load is measured as in-flight / (limit x weight)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)


def http_url(url: str, field: str = "") -> str:
    """`url` when it is an http(s) URL with a host; a ValueError naming `field` and what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field}{' ' if field else ''}'{_without_secrets(url)}' is not an http:// or https:// URL (e.g. https://api.example.com/v1)")
    return url


def _without_secrets(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


SECRET_IN_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]+@", re.IGNORECASE)
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "auth", "authorization", "credential",
                "credentials", "bearer", "signature", "sig", "cookie"}
"""Words of a field or query-parameter name that mark its value as a secret (`x-api-key`, `accessToken`)."""
SECRET_VALUE = re.compile(r"^\s*(bearer|basic|token)\s+\S", re.IGNORECASE)


def names_a_secret(name: str) -> bool:
    """Whether a field name such as `api_key`, `X-Auth-Token` or `accessToken` says it holds a secret."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", str(name))
    lowered = [word.lower() for word in words]
    return any(word in SECRET_WORDS for word in lowered) or "apikey" in "".join(lowered)


def secret_in(value: Any, where: str) -> str | None:
    """The dotted path of the first secret-looking key or value inside `value` (dicts and lists, any depth)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if names_a_secret(key):
                return f"{where}.{key}"
            if (found := secret_in(inner, f"{where}.{key}")) is not None:
                return found
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            if (found := secret_in(inner, f"{where}[{index}]")) is not None:
                return found
    elif isinstance(value, str) and (SECRET_VALUE.search(value) or secret_in_url(value)):
        return where
    return None


def secret_in_url(url: str) -> bool:
    """Credentials before the host (`user:key@`) or a secret-named query parameter (`?api_key=`)."""
    if SECRET_IN_URL.search(url):
        return True
    return any(names_a_secret(name) for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True))


class LLMConfig(BaseModel):
    """One OpenAI-compatible chat model, served by one endpoint or a pool, and how to sample from it."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    """Preset or file this config came from, for logs and run.json."""
    embedded: bool = False
    """True when the tool must start its own llama.cpp server (the `local` preset)."""
    base_url: str | list[str] | None = None
    """Endpoint root, e.g. https://api.deepseek.com, or a list of roots serving the same model."""
    endpoints: list[EndpointConfig] | None = None
    """A pool with per-endpoint key, cap and weight; an alternative to `base_url`."""
    model: str
    """Model id sent to the endpoint."""
    api_key_env: str | None = None
    """Name of the env variable holding the API key; None for keyless local servers."""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Sampling temperature."""
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(default=1024, ge=1)
    """Completion cap, always sent as `max_tokens` in the request body."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds before one request is abandoned."""
    max_retries: int = Field(default=3, ge=0)
    """Retries of a transient failure before the item becomes a failure."""
    concurrency: int = Field(default=8, ge=1)
    """Cap on requests in flight per endpoint; the actual limit adapts below it on throttling."""
    requests_per_second: float | None = Field(default=None, gt=0)
    """Optional rate limit on request starts, over all endpoints of this config."""
    tokens_per_minute: float | None = Field(default=None, gt=0)
    """Optional limit on prompt+completion tokens, over all endpoints of this config."""
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
    cached_input_price_per_million: float | None = None
    """Optional price in USD per million prompt tokens served from the endpoint's prompt cache; unset
    prices them as uncached input."""
    reasoning: bool = False
    """A thinking model (DeepSeek reasoner, Qwen3, ...): max_tokens defaults to REASONING_MAX_TOKENS and
    the dry run counts reasoning tokens."""

    @model_validator(mode="after")
    def _room_to_think(self) -> "LLMConfig":
        if self.reasoning and "max_tokens" not in self.model_fields_set:
            self.max_tokens = REASONING_MAX_TOKENS
        return self

    @model_validator(mode="after")
    def _one_endpoint_shape(self) -> "LLMConfig":
        urls = [e.base_url for e in self.endpoints] if self.endpoints is not None else self.base_url
        for url in [] if self.endpoints is not None else urls if isinstance(urls, list) else [urls] if urls else []:
            http_url(url, "base_url")
        if self.endpoints is not None and self.base_url is not None:
            raise ValueError("give either base_url or endpoints, not both")
        if isinstance(urls, list):
            if not urls:
                raise ValueError("the endpoint list is empty: give at least one base_url")
            if len(set(urls)) < len(urls):
                raise ValueError(f"an endpoint is listed twice ({', '.join(urls)})")
            if self.embedded and len(urls) > 1:
                raise ValueError("an embedded config starts its own server and takes no endpoint list")
        self._no_secret_inside()
        return self

    def _no_secret_inside(self) -> None:
        # The config is written to settings.json, run.json and the dataset card: a key must stay
        # in the environment, named by api_key_env, never in a field that is written out.
        urls = [e.base_url for e in self.endpoints] if self.endpoints is not None else self.base_url
        for url in urls if isinstance(urls, list) else [urls] if urls else []:
            if secret_in_url(url):
                raise ValueError(f"base_url {_without_secrets(url)}: holds credentials (before the host or in the query); "
                                 "put the key in an env variable named by api_key_env")
        if (where := secret_in(self.extra_body, "extra_body")) is not None:
            raise ValueError(f"{where} looks like a secret: put it in an env variable named by api_key_env")

    @model_serializer(mode="wrap")
    def _without_unset_pool_fields(self, handler) -> dict[str, Any]:
        # settings.json of runs made before pools existed must still match on resume.
        fields = handler(self)
        for name in ("endpoints", "tokens_per_minute", "cached_input_price_per_million"):
            if fields.get(name, 0) is None:
                del fields[name]
        if fields.get("reasoning") is False:
            del fields["reasoning"]
        return fields

    def endpoint_list(self) -> list[EndpointConfig]:
        """The endpoints serving this config, every field filled in; one for a single base_url."""
        if self.endpoints is not None:
            listed = self.endpoints
        else:
            urls = self.base_url if isinstance(self.base_url, list) else [self.base_url or ""]
            listed = [EndpointConfig(base_url=url) for url in urls]
        return [EndpointConfig(base_url=e.base_url, api_key_env=e.api_key_env or self.api_key_env,
                               concurrency=e.concurrency or self.concurrency, weight=e.weight) for e in listed]

    def total_concurrency(self) -> int:
        """Requests in flight at once over all endpoints, at their caps."""
        return sum(e.concurrency or self.concurrency for e in self.endpoint_list())

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float | None:
        """USD for these tokens, `cached_input_tokens` of the input at the cached price; None when the
        config has no prices."""
        if self.input_price_per_million is None and self.output_price_per_million is None:
            return None
        input_price = self.input_price_per_million or 0.0
        cached_price = input_price if self.cached_input_price_per_million is None else self.cached_input_price_per_million
        return ((input_tokens - cached_input_tokens) * input_price + cached_input_tokens * cached_price
                + output_tokens * (self.output_price_per_million or 0.0)) / 1e6

    def api_key(self, env_name: str | None = None) -> str:
        """The key from `env_name` (default: `api_key_env`), or a one-line ConfigError naming the variable."""
        env_name = env_name or self.api_key_env
        if not env_name:
            return "not-needed"
        key = os.environ.get(env_name, "").strip()
        if not key:
            raise ConfigError(
                f"LLM config '{self.name}' needs an API key: set {env_name} "
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
        try:  # a preset reads its URL and model from the environment (DEEPSEEK_BASE_URL, ...)
            return LLMConfig(**_preset(preset_or_path, role))
        except ValidationError as exc:
            raise ConfigError(f"LLM preset '{preset_or_path}' (as the environment sets it): {_one_line(exc)}") from None
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
    if "endpoints" in fields:
        base.pop("base_url", None)  # the file's pool replaces the preset's one endpoint
    if fields.get("reasoning") and "max_tokens" not in fields:
        base.pop("max_tokens", None)  # a thinking model's default, not the preset's

    try:
        return LLMConfig(**{**base, "name": path.name, **fields})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(map(str, error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


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

