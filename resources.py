"""What nodes share but state must not hold: LLM clients, the record store, the rules.

run.py builds one `RunResources` and passes it in `configurable.resources`. A graph
started elsewhere (LangGraph Studio) gets one built from its settings, once per
settings, so every node of a run talks to the same clients and files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
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
from llm_access.client import AnswerCache, ChatLLM, LLMPool, RoleUsage, TokenBudget
from llm_access.config import load_llm_config
from record_store.loading import SeedSet
from record_store.run_directory import prepare_run_directory
from record_store.store import RecordStore, repair_partial_line, write_atomically

_BUILT: dict[str, "RunResources"] = {}  # Studio runs, by thread id
USAGE_FILE = "usage.json"
USAGE_JOURNAL = "usage.journal"
USAGE_SAVE_SECONDS = 2.0


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
    journal: "UsageJournal | None" = None
    """Where this process's clients note their usage as it accrues."""
    journal_offsets: dict[str, int] = field(default_factory=dict)
    """Per usage journal of the run, how far the usage known here covers it (its Ray workers report theirs)."""
    saves_usage: bool = True
    """False in a Ray worker: its usage reaches usage.json through the driver (its journal covers a kill)."""
    _usage_saved: float = 0.0

    def save_usage(self) -> None:
        """Write the run's token usage and cost so far, and how far they cover each journal; the next invocation starts from it."""
        if not self.saves_usage:
            return
        offsets = {**self.journal_offsets, **({self.journal.name: self.journal.offset} if self.journal else {})}
        usage = {"token_usage": self.llms.usage_by_role(), "cost": self.llms.cost(), "journals": offsets}
        write_atomically(Path(self.settings.save_path) / USAGE_FILE, json.dumps(usage, indent=2))
        self._usage_saved = time.monotonic()

    def save_usage_now_and_then(self) -> None:
        """`save_usage`, at most every USAGE_SAVE_SECONDS: keeps the journal's tail that a resume reads short."""
        if time.monotonic() - self._usage_saved >= USAGE_SAVE_SECONDS:
            self.save_usage()

    @classmethod
    def build(cls, settings: RunSettings, embedded_url: str | None = None, cache_path: str | Path | None = None,
              models: dict | None = None, max_budget_tokens: int | None = None,
              journal_name: str = USAGE_JOURNAL) -> "RunResources":
        """Clients, store and rules for these settings.

        `embedded_url` is where the embedded server listens this time; it is kept out of
        the settings so that a resumed run on a new port has the same settings.
        `models` maps a role ("evol", "optim") to a chat model to use instead of ChatOpenAI.
        `journal_name` is this process's usage journal in the save path (a Ray worker has its own).
        """
        cache = AnswerCache(cache_path or Path(settings.save_path) / "llm_cache.sqlite")
        models = models or {}
        prior = prior_usage(Path(settings.save_path))
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
        pool = LLMPool(evol, optim, prior_usage=prior["token_usage"], prior_cost=prior["cost_by_role"],
                       prior_cost_without_cache=prior["cost_by_role_without_cache"], judge=judge)
        journal = UsageJournal(Path(settings.save_path), journal_name)
        for llm in pool.clients():
            journal.watch(llm)
        return cls(settings, pool, RecordStore(settings.save_path), FailureRules.load(settings.rules_path),
                   journal=journal, journal_offsets=prior["journals"])


class UsageJournal:
    """One JSON line per request, written before it is sent, and per answer with its tokens (and cost).

    usage.json is a snapshot naming, per journal file, the offset it covers; the next invocation
    adds the lines after it (`prior_usage`). A line reaches the kernel before the request leaves,
    so a kill -9 takes away no request and no answer's tokens; each process keeps its own journal.
    """

    def __init__(self, save_path: Path, name: str):
        self.name = name
        path = save_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        repair_partial_line(path)  # this process is the journal's only writer
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.offset = os.fstat(self._descriptor).st_size
        """Bytes of the journal, all of whose lines the usage counted in this process includes."""

    def watch(self, llm: ChatLLM) -> None:
        def note(usage: RoleUsage, counts: dict[str, int]) -> None:
            line = {"role": next(role for role, known in llm.usage.items() if known is usage), **counts}
            if "input_tokens" in counts:
                usd = llm.config.cost(counts["input_tokens"], counts["output_tokens"], counts["cached_input_tokens"])
                if usd is not None:
                    line["usd"] = usd
                    line["usd_without_cache"] = llm.config.cost(counts["input_tokens"], counts["output_tokens"])
            data = (json.dumps(line) + "\n").encode()
            os.write(self._descriptor, data)
            self.offset += len(data)

        llm.usage_journal = note


def journal_paths(save_path: Path) -> list[Path]:
    paths = [save_path / USAGE_JOURNAL, *sorted(save_path.glob("shards/w*/" + USAGE_JOURNAL))]
    return [path for path in paths if path.is_file()]


def prior_usage(save_path: Path) -> dict:
    """Usage of earlier invocations: usage.json, plus every journal's lines after the offset it covers."""
    snapshot_path = save_path / USAGE_FILE
    snapshot = json.loads(snapshot_path.read_text(encoding="utf-8")) if snapshot_path.exists() else {}
    usage: dict[str, dict[str, int]] = snapshot.get("token_usage", {})
    cost_by_role: dict[str, float] = dict((snapshot.get("cost") or {}).get("by_role", {}))
    without_cache: dict[str, float] = dict((snapshot.get("cost") or {}).get("by_role_without_cache", {}))
    offsets: dict[str, int] = dict(snapshot.get("journals", {}))
    for path in journal_paths(save_path):
        name = str(path.relative_to(save_path))
        offset = offsets.get(name, 0)
        with open(path, "rb") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # cut by a kill; its writer drops it when it opens the journal again
                offset += len(line)
                entry = json.loads(line)
                role, usd, usd_without_cache = entry.pop("role"), entry.pop("usd", None), entry.pop("usd_without_cache", None)
                counters = usage.setdefault(role, asdict(RoleUsage()))  # a role first seen in a journal has every counter
                for counter, value in entry.items():
                    counters[counter] = counters.get(counter, 0) + value
                if usd is not None:
                    cost_by_role[role] = cost_by_role.get(role, 0.0) + usd
                    without_cache[role] = without_cache.get(role, 0.0) + (usd_without_cache or usd)
        offsets[name] = offset
    return {"token_usage": usage, "cost_by_role": cost_by_role, "cost_by_role_without_cache": without_cache,
            "journals": offsets}


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
