"""Generator: one level of the final dataset, streamed item by item.

Parents are the survivors of the previous level, read by byte offset from their file.
Each parent flows evolve → evolution rules → diversity steps → respond → written record
on its own, and a freed request slot is taken by the next item at once: nothing waits
for another. Only the level boundary waits, because the next level needs its parents.
The record store is the truth of what is done, so a killed level resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable

from langchain_core.runnables import RunnableConfig

from llm_tasks.answers import respond
from llm_tasks.evolution import evolve
from llm_tasks.judge import judge_evolution, judge_response
from nodes.diversity import DiversitySteps, near_duplicate_index, step_names_of
from record_store.near_duplicates import IN_DEDUP_INDEX, write_membership
from ray_backend.shards import merge_shards
from record_store.store import failure_record
from resources import RunResources, emit, resources_from, timed
from state import GenerationState, LevelItem
from nodes.sibling_calls import gather_or_cancel

PROGRESS_SECONDS = 0.25


def child_id(root_id: str, level: int) -> str:
    """A record's id: its lineage root and its level."""
    return f"{root_id}.L{level}"


def items_in_flight(resources: RunResources) -> int:
    """Parents streamed at once: enough to keep every request slot busy while some items are between calls."""
    return 4 * resources.llms.evol.config.total_concurrency() + 32


async def _each(items: Iterable | AsyncIterable) -> AsyncIterator:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def stream_all(items: Iterable | AsyncIterable, worker: Callable[[object], Awaitable[None]], window: int) -> None:
    """Run `worker` on every item, at most `window` at once, starting the next as soon as one ends.

    `items` may be async (a Ray worker's parents arrive from the driver). The first error cancels
    the rest and is raised as it is (a budget stop, a bad key, a failing step).
    """
    slots, running, errors = asyncio.Semaphore(window), set(), []

    def finished(task: asyncio.Task) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())

    try:
        async for item in _each(items):
            await slots.acquire()
            if errors:
                break
            task = asyncio.create_task(worker(item))
            running.add(task)
            task.add_done_callback(finished)
        while running and not errors:
            await asyncio.wait(set(running), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    if errors:
        raise errors[0]


def record_line(item: LevelItem, response: str, method_id: str, reasoning: str | None = None) -> dict:
    """The records.jsonl line of an item that evolved and was answered; `reasoning` (--keep-reasoning) is the
    response's reasoning."""
    record = {"id": item["id"], "root_id": item["root_id"], "parent_id": item["parent_id"], "level": item["level"],
              "instruction": item["instruction"], "response": response, "original": item["original"]}
    if "reference" in item:
        record["reference"] = item["reference"]
    for optional in ("lineage", "added_by", IN_DEDUP_INDEX):
        if item.get(optional):
            record[optional] = item[optional]
    record["method_id"] = method_id
    record["parse"] = "lenient" if item.get("lenient") else "marker"
    if reasoning is not None:
        record["reasoning"] = reasoning
    return record


class LevelStream:
    """One level in flight: every parent streams through the item pipeline and into the store."""

    def __init__(self, resources: RunResources, state: GenerationState, total: int):
        self.resources, self.level = resources, state.level
        self.method, self.method_id = state.method, state.method_id
        self.steps = DiversitySteps(resources, state.level)
        self.total, self.done, self.failures = total, 0, 0
        self._last_progress = 0.0

    def pending_parents(self, span: list[int]) -> Iterable[dict]:
        """The previous level's survivors whose child is not yet written (all of them, unless resuming)."""
        store = self.resources.store
        path = store.seeds_path if self.level == 1 else store.records_path
        for _, parent in store.iter_range(path, span[0], span[1]):
            if store.is_written(child_id(parent["root_id"], self.level), self.level):
                self.done += 1
            else:
                yield parent

    async def run_parent(self, parent: dict) -> None:
        """Evolve one parent, pass it through the diversity steps, answer what survives, write it all."""
        item = LevelItem(id=child_id(parent["root_id"], self.level), root_id=parent["root_id"], parent_id=parent["id"],
                         level=self.level, parent_instruction=parent["instruction"], original=parent["original"])
        if "reference" in parent:
            item["reference"] = parent["reference"]
        resources = self.resources
        outcome = await evolve(resources.llms.evol, self.method, parent["instruction"], resources.rules)
        item.update(instruction=outcome.candidate_text, raw=outcome.raw, lenient=outcome.lenient)
        failure = outcome.failure or (await judge_evolution(resources.llms.judge_llm, parent["instruction"], outcome.text)
                                      if resources.settings.failure_judge == "all" else None)
        if failure:
            outputs = [(False, failure_record(item, "evolve", failure.reason, failure.detail, outcome.raw))]
        else:
            outputs = await gather_or_cancel(self._answer(i) for i in await self.steps.apply(item))
        self._write(item["id"], outputs)

    async def _answer(self, item: LevelItem) -> tuple[bool, dict]:
        """(True, record) for an answered item; (False, failure) for one eliminated by a step or by F."""
        if item.get("elimination"):
            elimination = item["elimination"]
            return False, failure_record(item, "diversity", elimination["reason"], elimination["detail"], item.get("raw", ""))
        answer = await respond(self.resources.llms.evol, item["instruction"], self.resources.rules)
        if answer.failure is None and self.resources.settings.failure_judge == "all":
            answer = answer.judged(await judge_response(self.resources.llms.judge_llm, item["instruction"], answer.raw))
        if answer.failure:
            return False, failure_record(item, "respond", answer.failure.reason, answer.failure.detail, answer.raw)
        kept = answer.reasoning if self.resources.settings.keep_reasoning else None
        return True, record_line(item, answer.text, self.method_id, kept)

    def _write(self, own_id: str, outputs: list[tuple[bool, dict]]) -> None:
        # The parent's own child goes last: once it is on disk, so is everything created beside
        # it, which is what lets a resumed level skip this parent whole.
        store = self.resources.store
        # A parent whose own child an interrupted invocation did not write is done again whole; what
        # that invocation wrote beside it is on disk already, and is not written twice.
        outputs = [(ok, line) for ok, line in outputs if not store.written_earlier(line["id"], line["level"])]
        for own in (False, True):
            group = [(ok, line) for ok, line in outputs if (line["id"] == own_id) == own]
            store.add_failures([line for ok, line in group if not ok])
            store.add_records([line for ok, line in group if ok])
        created = sum(1 for _, line in outputs if line["id"] != own_id)
        self.done += 1 + created  # created items join the total as they are written, so the bar can fill
        self.failures += sum(1 for ok, line in outputs if not ok and line["id"] == own_id)
        self.total += created
        self.report_progress()

    def report_progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress = now
        self.resources.save_usage_now_and_then()
        llms = self.resources.llms
        usage = llms.usage_this_invocation().values()
        emit({"event": "level", "level": self.level, "done": self.done, "total": self.total, "failures": self.failures,
              "in_flight": sum(client.in_flight for client in llms.clients()),
              "requests": sum(u.get("requests", 0) for u in usage),
              "output_tokens": sum(u.get("output_tokens", 0) for u in usage)})


@timed("generation")
async def start_level(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the level reached so far; writes the next level and where its records start in records.jsonl.

    A level starts where the one before ended (level 1 at the file's start), not at the file's size:
    the checkpoint of this node may be lost to a kill after the level began writing (LangGraph saves
    it while the next node runs), and its rerun must not leave those records outside the level.
    """
    level = state.level + 1
    start = 0 if level == 1 else state.level_spans[str(level - 1)][1]
    return {"level": level, "level_spans": {**state.level_spans, str(level): [start, -1]}}


@timed("generation")
async def stream_level(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the previous level's survivors; streams each through the item pipeline into the store.

    Writes the level's end offset and its counts, taken from the store so that a resumed level counts
    what earlier invocations wrote: parents, records, failures, and items the diversity steps added.
    """
    resources = resources_from(config)
    level, store = state.level, resources.store
    parents_span = state.level_spans[str(level - 1)]
    parents = state.level_counts[str(level - 1)]["records"]  # every record of a level is a parent of the next
    # What a killed Ray run left in its shard files belongs to this level (the one it was streaming):
    # merged before the level's parents are chosen, with or without workers this time.
    merge_shards(store, resources.settings.save_path)
    stream = LevelStream(resources, state, total=parents)
    if resources.workers is not None:  # --workers N: the shards stream on Ray and are merged into the store
        await resources.workers.stream_level(stream, parents_span)
    else:
        try:
            await stream_all(stream.pending_parents(parents_span), stream.run_parent, items_in_flight(resources))
        finally:
            stream.steps.close()
        stream.report_progress(final=True)
    store.sync()
    resources.save_usage()
    if "dedup" in step_names_of(resources.settings):
        # The live index's members, for a check that a resumed run rebuilt the same one.
        membership = (await resources.workers.index_membership() if resources.workers is not None
                      else near_duplicate_index(resources).membership())
        write_membership(resources.settings.save_path, level, membership)
    counts = {"parents": parents, **store.level_tally(level)}
    return {"level_spans": {**state.level_spans, str(level): [state.level_spans[str(level)][0], store.size(store.records_path)]},
            "level_counts": {**state.level_counts, str(level): counts}}
