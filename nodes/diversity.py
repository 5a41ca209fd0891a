"""Diversity: the hook in each generation level where survivors are filtered or extended.

Each step takes the chunk's survivors and returns them, marking an item it eliminates with
`elimination = {"reason", "detail"}` and appending new items it creates. Built in:
`dedup` (MinHash LSH near-duplicates across seeds and every level), `breadth` (an
in-breadth mutation writes a new instruction for a share of survivors) and `equality`
(an LLM judge; see --equality-check). Any other name is `module:function` or
`path/to/file.py:function`, an async function with the same signature.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from user_errors import ConfigError
from record_store.near_duplicates import NearDuplicateIndex
from nodes.generator import failure_record
from resources import RunResources, resources_from, timed
from state import ChunkItem, GenerationState
from llm_tasks.evolution import create_in_breadth
from llm_tasks.answers import judge_information_gain

DiversityStep = Callable[[list[ChunkItem], "StepContext"], Awaitable[list[ChunkItem]]]


@dataclass
class StepContext:
    """What a step may use: the level, the run's clients, rules and settings."""

    level: int
    resources: RunResources


def eliminate_item(item: ChunkItem, reason: str, detail: str = "") -> None:
    """Mark an item as eliminated; the diversity node records it as a failure."""
    item["elimination"] = {"reason": reason, "detail": detail}


async def dedup_step(chunk: list[ChunkItem], context: StepContext) -> list[ChunkItem]:
    """Eliminate near-duplicates of anything in the pool (seeds, every level, this chunk)."""
    index = near_duplicate_index(context.resources)
    for item in chunk:
        if item.get("elimination"):
            continue
        if match := index.add_unless_duplicate(item["id"], item["root_id"], item["instruction"]):
            eliminate_item(item, "near_duplicate", f"duplicates {match}")
    return chunk


async def breadth_step(chunk: list[ChunkItem], context: StepContext) -> list[ChunkItem]:
    """For a share of the survivors, write a brand-new instruction in the same domain."""
    resources = context.resources
    survivors = [item for item in chunk if not item.get("elimination")]
    ratio = resources.settings.breadth_ratio
    chosen = [item for item in survivors if _picked(item["id"], ratio, resources.settings.seed)]
    created = [await create_in_breadth(resources.llms.evol, item, resources.rules, context.level) for item in chosen]
    return chunk + created


async def equality_step(chunk: list[ChunkItem], context: StepContext) -> list[ChunkItem]:
    """Eliminate evolutions that the LLM judges to add nothing over their parent."""
    llm = context.resources.llms.evol
    for item in chunk:
        if not item.get("elimination") and "parent_instruction" in item:
            if not await judge_information_gain(llm, item["parent_instruction"], item["instruction"]):
                eliminate_item(item, "no_information_gain", "the judge saw nothing added over the parent")
    return chunk


def _picked(item_id: str, ratio: float, seed: int) -> bool:
    # Decided by id, not by position, so a resumed chunk picks the same items.
    return random.Random(f"{seed}:{item_id}").random() < ratio


BUILT_IN_STEPS: dict[str, DiversityStep] = {"dedup": dedup_step, "breadth": breadth_step, "equality": equality_step}


def near_duplicate_index(resources: RunResources) -> NearDuplicateIndex:
    """The run's index, built once from every instruction already in the pool (so resume sees it too)."""
    if resources.near_duplicates is None:
        resources.near_duplicates = NearDuplicateIndex.from_store(resources.store, resources.settings.dedup_threshold)
    return resources.near_duplicates


def load_step(name: str) -> DiversityStep:
    """A built-in step, or `module:function` / `file.py:function` from the user's code."""
    if name in BUILT_IN_STEPS:
        return BUILT_IN_STEPS[name]
    module_name, _, function = name.partition(":")
    if not function:
        raise ConfigError(f"--diversity '{name}': use dedup, breadth, none, or module:function")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        return getattr(module, function)
    except (ImportError, FileNotFoundError, AttributeError) as exc:
        raise ConfigError(f"--diversity '{name}': cannot load it ({exc})") from None


def step_names(resources: RunResources) -> list[str]:
    names = [n for n in resources.settings.diversity if n != "none"]
    return (["equality"] if resources.settings.equality_check else []) + names


@timed("generation")
async def diversity(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the surviving chunk; runs the diversity steps, records eliminations, writes the new chunk."""
    resources = resources_from(config)
    context = StepContext(level=state.level, resources=resources)
    chunk = [dict(item) for item in state.chunk]
    for name in step_names(resources):
        chunk = await load_step(name)(chunk, context)
    eliminated = [item for item in chunk if item.get("elimination")]
    resources.store.add_failures([failure_record(item, "diversity", item["elimination"]["reason"],
                                                 item["elimination"]["detail"], item.get("raw", ""))
                                  for item in eliminated])
    counts = dict(state.level_counts[str(state.level)])
    counts["failures"] += len(eliminated)
    counts["added"] = counts.get("added", 0) + sum(1 for item in chunk if item.get("lineage") == "breadth")
    return {"chunk": [item for item in chunk if not item.get("elimination")],
            "level_counts": {**state.level_counts, str(state.level): counts}}

