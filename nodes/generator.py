"""Generator: one level of the final dataset, chunk by chunk.

Parents are the survivors of the previous level, read by byte offset from their
file; children and failures are appended to the record store as each chunk ends.
"""

from __future__ import annotations

import asyncio

from langchain_core.runnables import RunnableConfig

from resources import RunResources, emit, resources_from, timed
from state import ChunkItem, GenerationState
from llm_tasks.evolution import evolve
from llm_tasks.answers import respond


def child_id(root_id: str, level: int) -> str:
    """A record's id: its lineage root and its level."""
    return f"{root_id}.L{level}"


def _parents_file(resources: RunResources, level: int):
    store = resources.store
    return store.seeds_path if level == 0 else store.records_path


def chunk_size(resources: RunResources) -> int:
    """One checkpoint per chunk; big enough to keep every LLM slot busy."""
    return resources.settings.batch_size * max(1, resources.settings.evol_llm.concurrency)


def failure_record(item: ChunkItem, stage: str, reason: str, detail: str, raw: str) -> dict:
    """The failures.jsonl line for an item that was eliminated at `stage`."""
    return {"id": item["id"], "root_id": item["root_id"], "parent_id": item["parent_id"], "level": item["level"],
            "stage": stage, "reason": reason, "detail": detail, "instruction": item.get("instruction"), "raw": raw}


@timed("generation")
async def start_level(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the level reached so far; writes the next level, its parents' cursor and its start offset."""
    store = resources_from(config).store
    level = state.level + 1
    spans = {**state.level_spans, str(level): [store.size(store.records_path), -1]}
    return {"level": level, "cursor": state.level_spans[str(level - 1)][0], "level_spans": spans,
            "level_counts": {**state.level_counts, str(level): {"parents": 0, "records": 0, "failures": 0}}}


@timed("generation")
async def next_chunk(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads parents from the cursor; writes the chunk to evolve and the advanced cursor."""
    resources = resources_from(config)
    end = state.level_spans[str(state.level - 1)][1]
    chunk, cursor = [], state.cursor
    for cursor, parent in resources.store.iter_range(_parents_file(resources, state.level - 1), state.cursor, end,
                                                     limit=chunk_size(resources)):
        chunk.append(ChunkItem(
            id=child_id(parent["root_id"], state.level), root_id=parent["root_id"], parent_id=parent["id"],
            level=state.level, parent_instruction=parent["instruction"], original=parent["original"],
            **({"reference": parent["reference"]} if "reference" in parent else {}),
        ))
    counts = dict(state.level_counts[str(state.level)])
    counts["parents"] += len(chunk)
    return {"chunk": chunk, "cursor": cursor, "level_counts": {**state.level_counts, str(state.level): counts}}


@timed("generation")
async def evolve_chunk(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the chunk's parent instructions; writes each item's raw evolution answer."""
    resources = resources_from(config)
    outcomes = await asyncio.gather(*(
        evolve(resources.llms.evol, state.method, item["parent_instruction"], resources.rules) for item in state.chunk
    ))
    chunk = []
    for item, outcome in zip(state.chunk, outcomes):
        failure = {"reason": outcome.failure.reason, "detail": outcome.failure.detail} if outcome.failure else None
        chunk.append({**item, "instruction": outcome.candidate_text, "raw": outcome.raw,
                      "lenient": outcome.lenient, "evolution_failure": failure})
    return {"chunk": chunk}


@timed("generation")
async def eliminate(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the evolved chunk; writes failed evolutions to failures.jsonl and keeps the rest."""
    store = resources_from(config).store
    failed = [i for i in state.chunk if i.get("evolution_failure")]
    store.add_failures([failure_record(i, "evolve", i["evolution_failure"]["reason"], i["evolution_failure"]["detail"],
                                 i["raw"]) for i in failed])
    counts = dict(state.level_counts[str(state.level)])
    counts["failures"] += len(failed)
    return {"chunk": [i for i in state.chunk if not i.get("evolution_failure")],
            "level_counts": {**state.level_counts, str(state.level): counts}}


def _record(item: ChunkItem, response: str, method_id: str) -> dict:
    record = {"id": item["id"], "root_id": item["root_id"], "parent_id": item["parent_id"], "level": item["level"],
              "instruction": item["instruction"], "response": response, "original": item["original"]}
    if "reference" in item:
        record["reference"] = item["reference"]
    if item.get("lineage"):
        record["lineage"] = item["lineage"]
    record["method_id"] = method_id
    record["parse"] = "lenient" if item.get("lenient") else "marker"
    return record


@timed("generation")
async def respond_chunk(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the surviving chunk; answers each item and writes records, or failures when F fails."""
    resources = resources_from(config)
    answers = await asyncio.gather(*(respond(resources.llms.evol, i["instruction"], resources.rules) for i in state.chunk))
    records, failures = [], []
    for item, answer in zip(state.chunk, answers):
        if answer.failure:
            failures.append(failure_record(item, "respond", answer.failure.reason, answer.failure.detail, answer.raw))
        else:
            records.append(_record(item, answer.text, state.method_id))
    resources.store.add_failures(failures)
    resources.store.add_records(records)
    counts = dict(state.level_counts[str(state.level)])
    counts["failures"] += len(failures)
    counts["records"] += len(records)
    emit_level_progress(state, counts, resources)
    return {"chunk": [], "level_counts": {**state.level_counts, str(state.level): counts}}


def emit_level_progress(state: GenerationState, counts: dict[str, int], resources: RunResources) -> None:
    total = state.level_counts[str(state.level - 1)]["records"] + counts.get("added", 0)
    output_tokens = sum(u.get("output_tokens", 0) for u in resources.llms.usage_this_invocation().values())
    emit({"event": "level", "level": state.level, "done": counts["records"] + counts["failures"], "total": total,
          "failures": counts["failures"], "output_tokens": output_tokens})


@timed("generation")
async def finish_level(state: GenerationState, config: RunnableConfig) -> dict:
    """Writes the end offset of this level's survivors, so the next level reads exactly them."""
    store = resources_from(config).store
    spans = {**state.level_spans, str(state.level): [state.level_spans[str(state.level)][0], store.size(store.records_path)]}
    return {"level_spans": spans}
