"""What nodes share but state must not hold: LLM clients, the record store, the rules.

run.py builds one `RunResources` and passes it in `configurable.resources`. A graph
started elsewhere (LangGraph Studio) gets one built from its settings, once per
settings, so every node of a run talks to the same clients and files.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer

from user_errors import ConfigError

from settings import RunSettings, settings_from_inputs
from state import RunInput

from record_store.near_duplicates import NearDuplicateIndex
from failure_checks.rules import FailureRules
from llm_access.embedded_server import shared_embedded_server
from llm_access.client import AnswerCache, ChatLLM, LLMPool, TokenBudget
from record_store.loading import SeedSet
from record_store.run_directory import prepare_run_directory
from llm_access.config import load_llm_config
from record_store.store import RecordStore, write_atomically

_BUILT: dict[str, "RunResources"] = {}  # Studio runs, by thread id
USAGE_FILE = "usage.json"


@dataclass
class RunResources:
    """Live objects of one run."""

    settings: RunSettings
    llms: LLMPool
    store: RecordStore
    rules: FailureRules
    near_duplicates: NearDuplicateIndex | None = None
    """The dedup step's index, built on first use from everything already in the store; a Ray worker's
    is a proxy of the run's one shared index (`add_unless_duplicate` is then awaited)."""
    workers: Any = None
    """The Ray workers that stream generation levels (ray_backend.workers.RayWorkers), or None to stream here."""

    def save_usage(self) -> None:
        """Write the run's token usage and cost so far; the next invocation starts from it."""
        usage = {"token_usage": self.llms.usage_by_role(), "cost": self.llms.cost()}
        write_atomically(Path(self.settings.save_path) / USAGE_FILE, json.dumps(usage, indent=2))

    @classmethod
    def build(cls, settings: RunSettings, embedded_url: str | None = None, cache_path: str | Path | None = None,
              models: dict | None = None, max_budget_tokens: int | None = None) -> "RunResources":
        """Clients, store and rules for these settings.

        `embedded_url` is where the embedded server listens this time; it is kept out of
        the settings so that a resumed run on a new port has the same settings.
        `models` maps a role ("evol", "optim") to a chat model to use instead of ChatOpenAI.
        """
        cache = AnswerCache(cache_path or Path(settings.save_path) / "llm_cache.sqlite")
        models = models or {}
        prior = _prior_usage(Path(settings.save_path) / USAGE_FILE)
        spent = sum(u.get("input_tokens", 0) + u.get("output_tokens", 0) for u in prior["token_usage"].values())
        budget = TokenBudget(max_budget_tokens, used=spent)

        def client(config, role):
            if config.embedded:
                config = config.model_copy(update={"base_url": embedded_url})
            return ChatLLM(config, model=models.get(role), cache=cache, budget=budget)

        evol = client(settings.evol_llm, "evol")
        same = settings.optim_llm == settings.evol_llm and "optim" not in models
        optim = evol if same else client(settings.optim_llm, "optim")
        judge = client(load_llm_config(settings.judge_llm_config, "evol"), "judge") if settings.judge_llm_config else None
        pool = LLMPool(evol, optim, prior_usage=prior["token_usage"], prior_cost=(prior["cost"] or {}).get("by_role", {}),
                       prior_cost_without_cache=(prior["cost"] or {}).get("by_role_without_cache", {}), judge=judge)
        return cls(settings, pool, RecordStore(settings.save_path), FailureRules.load(settings.rules_path))


def _prior_usage(path: Path) -> dict:
    if not path.exists():
        return {"token_usage": {}, "cost": None}
    return json.loads(path.read_text(encoding="utf-8"))


def resources_from(config: RunnableConfig) -> RunResources:
    """The run's resources: from run.py's config, or those built for this Studio thread."""
    configurable = config.get("configurable") or {}
    if (resources := configurable.get("resources")) is not None:
        return resources
    thread = configurable.get("thread_id")
    if thread not in _BUILT:
        raise ConfigError("this thread's run resources are gone (the server restarted?): start a new run")
    return _BUILT[thread]


def run_settings(run_input: RunInput, config: RunnableConfig) -> RunSettings:
    """The run's settings: run.py's, or those of Studio's input form."""
    if (resources := (config.get("configurable") or {}).get("resources")) is not None:
        return resources.settings
    return settings_from_inputs(run_input.model_dump())[0]


def start_resources(run_input: RunInput, config: RunnableConfig, seeds: SeedSet) -> RunResources:
    """At the first node: check the save path against this run (its settings and the `seeds` read), then
    run.py's resources, or resources built from Studio's input form."""
    configurable = config.get("configurable") or {}
    if configurable.get("resources") is not None:
        # run.py checked the directory before opening its checkpoint file: here only the data is compared.
        prepare_run_directory(configurable["resources"].settings, seeds=seeds, may_replace=False)
        return configurable["resources"]
    settings = run_settings(run_input, config)
    if note := prepare_run_directory(settings, seeds=seeds):
        print(note, file=sys.stderr)
    needs_server = settings.evol_llm.embedded or settings.optim_llm.embedded
    embedded_url = shared_embedded_server().base_url if needs_server else None
    _BUILT[configurable.get("thread_id")] = resources = RunResources.build(settings, embedded_url=embedded_url)
    return resources


def timed(phase: str):
    """Stamp a node's start and end into `phase_times[phase]` (merged as min start, max end)."""

    def decorate(node):
        @wraps(node)
        async def wrapper(state, config: RunnableConfig):
            started = time.time()
            update = await node(state, config)
            update = dict(update or {})
            update["phase_times"] = {phase: [started, time.time()]}
            return update

        return wrapper

    return decorate


def emit(event: dict) -> None:
    """Send a progress event on LangGraph's custom stream; a no-op when nobody streams it."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a graph run (unit tests of a node's helpers)
        return
    writer(event)
