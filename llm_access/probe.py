"""One tiny request per endpoint before a run spends anything: a wrong URL, model or key stops it at once.

For each LLM config of the run (the evol one and the optim one, once when they are the same) and
each of its endpoints: GET <base_url>/models where the server offers it, then one chat completion
of a few tokens. A model the server does not list is an error unless the chat answers for it
anyway (llama.cpp's server lists its file name and serves any name); a server without the route
is fine. A 400, 401, 403 or 404, or no answer after the config's retries, is a ConfigError naming
the LLM, the URL and the status: the run stops with exit 2 before anything else is sent. The chat
requests are counted in the run's usage under the role "probe" (the free model listing is not).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llm_access.client import RoleUsage, token_counts
from llm_access.config import EndpointConfig, LLMConfig
from user_errors import ConfigError

PROBE_PROMPT = "Reply with the single word OK."
PROBE_MAX_TOKENS = 16
"""Enough for a word; a thinking model cut short still answers 200, which is all the probe asks."""
HINTS = {
    400: "the server refuses the request: check model and extra_body",
    401: "the key is refused: check the env variable named by api_key_env",
    403: "the key may not use this model or endpoint",
    404: "check base_url (most servers want it to end in /v1) and model",
    422: "the server refuses the request body: check extra_body",
}


@dataclass
class ProbeResult:
    """What the probes sent, for the run's usage."""

    usage: RoleUsage = field(default_factory=RoleUsage)
    cost_usd: float | None = None
    cost_usd_without_cache: float | None = None
    journal: Path | None = None
    """The run's usage journal (SAVE_PATH/usage.journal): each probe request is noted there before it is
    sent, as every request of the run is, so a kill -9 cannot lose it; the next invocation adds it up."""

    def note(self, counts: dict) -> None:
        if self.journal is not None:
            with open(self.journal, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"role": "probe", **counts}) + "\n")


def _refusal(label: str, url: str, response: httpx.Response, key_env: str | None) -> ConfigError:
    status = response.status_code
    message = ""
    if status != 401:  # a refused key's message may echo part of the key
        try:
            message = str(response.json().get("error", {}).get("message", ""))
        except (ValueError, AttributeError):
            message = response.text
        message = message.splitlines()[0][:160] if message.strip() else ""
    said = f" ({message})" if message else ""
    hint = HINTS.get(status, "check the LLM config")
    if status == 401:
        hint = f"the key is refused: check {key_env}" if key_env else "the server wants a key: set api_key_env"
    return ConfigError(f"{label} at {url} answered HTTP {status}{said}: {hint}")


TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


async def _probe_endpoint(client: httpx.AsyncClient, config: LLMConfig, endpoint: EndpointConfig, label: str,
                          result: ProbeResult) -> None:
    """Probe one endpoint; a transient failure (5xx, 429, a timeout, a reset) is tried again, as a real call would be."""
    tries = max(1, config.max_retries + 1)
    result.usage.calls += 1
    result.note({"calls": 1})
    for attempt in range(tries):
        try:
            return await _probe_once(client, config, endpoint, label, result)
        except _Transient as exc:
            if attempt == tries - 1:
                raise ConfigError(str(exc)) from None
            await asyncio.sleep(min(2.0 ** attempt, 10.0))


class _Transient(Exception):
    """A probe failure worth another try; its message is the one-line error if the tries run out."""


async def _probe_once(client: httpx.AsyncClient, config: LLMConfig, endpoint: EndpointConfig, label: str,
                      result: ProbeResult) -> None:
    root = endpoint.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {config.api_key(endpoint.api_key_env)}"}
    served = None
    try:  # the model list is optional: a server without it (or whose list route breaks) is judged by its chat
        listed = await client.get(f"{root}/models", headers=headers)  # free: not counted as a request
    except httpx.HTTPError:
        listed = None
    if listed is not None and listed.status_code in (401, 403):
        raise _refusal(label, f"{root}/models", listed, endpoint.api_key_env)
    if listed is not None and listed.status_code == 200 and not config.embedded:
        served = _model_ids(listed)  # the embedded llama.cpp server lists its file's path, answers for any name
    try:
        body = {"model": config.model, "messages": [{"role": "user", "content": PROBE_PROMPT}],
                **config.extra_body, "max_tokens": PROBE_MAX_TOKENS}
        result.usage.requests += 1
        result.note({"requests": 1})
        answer = await client.post(f"{root}/chat/completions", headers=headers, json=body)
    except httpx.HTTPError as exc:
        raise _Transient(f"{label} at {root} gave no answer ({type(exc).__name__}: {str(exc)[:120] or 'no detail'}): "
                         "check base_url and that the server is up") from None
    unlisted = served is not None and config.model not in served
    if unlisted and answer.status_code != 200:
        shown = ", ".join(sorted(served)[:8]) or "none"
        raise ConfigError(f"{label} at {root}: the server does not list model '{config.model}' (it lists: {shown}) "
                          f"and answered HTTP {answer.status_code}: check model in the LLM config '{config.name}'")
    if answer.status_code in TRANSIENT_STATUS:
        raise _Transient(str(_refusal(label, f"{root}/chat/completions", answer, endpoint.api_key_env)))
    if answer.status_code != 200:
        raise _refusal(label, f"{root}/chat/completions", answer, endpoint.api_key_env)
    try:
        payload = answer.json()
        choices = payload["choices"]
        assert isinstance(choices, list) and choices
    except (ValueError, KeyError, TypeError, AssertionError):
        raise _Transient(f"{label} at {root}/chat/completions answered 200 but not with a chat completion "
                         f"({answer.text[:80]!r}): check base_url") from None
    if unlisted:  # llama.cpp's server lists its file name and answers for any model name
        print(f"note: {label} at {root} does not list model '{config.model}' but answers for it", file=sys.stderr)
    usage = result.usage
    input_tokens, output_tokens, reasoning, cached = token_counts(payload.get("usage") or {}, {})
    usage.input_tokens += input_tokens
    usage.output_tokens += output_tokens
    usage.reasoning_tokens += reasoning
    usage.cached_input_tokens += cached
    spent = config.cost(input_tokens, output_tokens, cached)
    result.note({"input_tokens": input_tokens, "output_tokens": output_tokens, "reasoning_tokens": reasoning,
                 "cached_input_tokens": cached,
                 **({"usd": spent, "usd_without_cache": config.cost(input_tokens, output_tokens)} if spent is not None
                    else {})})
    if spent is not None:
        result.cost_usd = (result.cost_usd or 0.0) + spent
        result.cost_usd_without_cache = (result.cost_usd_without_cache or 0.0) + config.cost(input_tokens, output_tokens)


def _model_ids(response: httpx.Response) -> set[str] | None:
    """The ids a /models answer lists; None when it is not a model list (then nothing is checked)."""
    try:
        data = response.json().get("data")
        return {item["id"] for item in data if isinstance(item, dict) and "id" in item}
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


async def probe_llms(configs: dict[str, LLMConfig], result: ProbeResult) -> ProbeResult:
    """Probe every endpoint of these configs (keyed by the LLM's label, e.g. "evol LLM"), one after another.

    Raises ConfigError, one line, on the first endpoint that cannot serve the run.
    """
    for label, config in configs.items():
        async with httpx.AsyncClient(timeout=min(config.timeout, 60.0)) as client:
            for endpoint in config.endpoint_list():
                await _probe_endpoint(client, config, endpoint, label, result)
    return result


def probe_run(evol: LLMConfig, optim: LLMConfig, embedded_url: str | None = None,
              into: ProbeResult | None = None, save_path: str | Path | None = None) -> ProbeResult:
    """Probe the run's LLMs: with `embedded_url`, the embedded ones there, else the others; counts go `into`
    (and into the run's usage journal in `save_path`, where one exists already)."""
    labels = {"evol LLM": evol} if evol == optim else {"evol LLM": evol, "optim LLM": optim}
    embedded = embedded_url is not None
    chosen = {f"{label} '{config.name}'": config.model_copy(update={"base_url": embedded_url}) if embedded else config
              for label, config in labels.items() if config.embedded == embedded}
    result = into or ProbeResult()
    if save_path is not None:
        result.journal = Path(save_path) / "usage.journal"
    if chosen:
        asyncio.run(probe_llms(chosen, result))
    return result
