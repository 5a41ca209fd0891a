"""Diversity: the hook in each generation level where survivors are filtered or extended.

Every surviving evolution passes the level's steps in order, one item at a time as it
arrives, so no item waits for another. A step eliminates an item by marking it
(`eliminate_item`) and creates new items by returning them beside it.

Built in, deciding per item: `dedup` (an atomic check-and-insert into the near-duplicate
index of seeds and every level), `breadth` (an in-breadth mutation writes a new
instruction for a share of survivors) and `equality` (an LLM judge; see --equality-check).
Any other name is `module:function` or `path/to/file.py:function`: an async function over a
list of items, fed micro-batches of whatever items are ready.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import importlib.util
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from llm_access.client import FatalLLMError
from llm_tasks.answers import judge_information_gain
from llm_tasks.evolution import create_in_breadth
from record_store.near_duplicates import IN_DEDUP_INDEX, NearDuplicateIndex
from resources import RunResources
from settings import RunSettings
from state import LevelItem
from user_errors import ConfigError
from nodes.sibling_calls import gather_or_cancel

DiversityStep = Callable[[list[LevelItem], "StepContext"], Awaitable[list[LevelItem]]]
"""A user's step: takes a list of items, returns them (and any it created)."""
ItemStep = Callable[[LevelItem, "StepContext"], Awaitable[list[LevelItem]]]
"""A built-in step: takes one item, returns it (and any it created)."""

MICRO_BATCH_ITEMS = 64
MICRO_BATCH_SECONDS = 0.1


class DiversityStepError(ConfigError):
    """A diversity step failed or returned something malformed; the run ends naming it."""


@dataclass
class StepContext:
    """What a step may use: the level, the run's clients, rules and settings."""

    level: int
    resources: RunResources


def eliminate_item(item: LevelItem, reason: str, detail: str = "") -> None:
    """Mark an item as eliminated; it is recorded as a failure with this reason."""
    item["elimination"] = {"reason": reason, "detail": detail}


async def dedup_item(item: LevelItem, context: StepContext) -> list[LevelItem]:
    """Eliminate a near-duplicate of anything in the pool (seeds, every level); otherwise join the pool."""
    index = near_duplicate_index(context.resources)
    match = index.add_unless_duplicate(item["id"], item["root_id"], item["instruction"])
    if inspect.isawaitable(match):  # the index shared by Ray workers answers from another process
        match = await match
    if match:
        eliminate_item(item, "near_duplicate", f"duplicates {match}")
    else:
        # Written with the item: a resumed run rebuilds the index from exactly what joined it here.
        item[IN_DEDUP_INDEX] = True
    return [item]


async def breadth_item(item: LevelItem, context: StepContext) -> list[LevelItem]:
    """For a share of the survivors, write a brand-new instruction in the same domain beside it."""
    resources = context.resources
    if not _picked(item["id"], resources.settings.breadth_ratio, resources.settings.seed):
        return [item]
    return [item, await create_in_breadth(resources.llms.evol, item, resources.rules, context.level)]


async def equality_item(item: LevelItem, context: StepContext) -> list[LevelItem]:
    """Eliminate an evolution that the LLM judges to add nothing over its parent."""
    if "parent_instruction" in item and not await judge_information_gain(
            context.resources.llms.evol, item["parent_instruction"], item["instruction"]):
        eliminate_item(item, "no_information_gain", "the judge saw nothing added over the parent")
    return [item]


def _picked(item_id: str, ratio: float, seed: int) -> bool:
    # Decided by id, not by arrival order, so a resumed level picks the same items.
    return random.Random(f"{seed}:{item_id}").random() < ratio


BUILT_IN_STEPS: dict[str, ItemStep] = {"dedup": dedup_item, "breadth": breadth_item, "equality": equality_item}


def near_duplicate_index(resources: RunResources) -> NearDuplicateIndex:
    """The run's index, built once from every instruction already in the pool (so resume sees it too)."""
    if resources.near_duplicates is None:
        resources.near_duplicates = NearDuplicateIndex.from_store(resources.store, resources.settings.dedup_threshold)
    return resources.near_duplicates


def load_step(name: str) -> DiversityStep:
    """A user's step, `module:function` or `file.py:function`."""
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
        step = getattr(module, function)
    except Exception as exc:  # any error in the user's module is theirs to fix: one line naming the step
        raise ConfigError(f"--diversity '{name}': cannot load it ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    check_step_signature(name, function, step)
    return step


def check_step_signature(name: str, function: str, step: object) -> None:
    """A user's step must be `async def f(items, context)`: checked before any paid call, not at its first batch."""
    expected = f"write 'async def {function}(items, context)'"
    if not inspect.iscoroutinefunction(step) and not inspect.iscoroutinefunction(getattr(step, "__call__", None)):
        raise ConfigError(f"--diversity '{name}': not an async function ({expected})")
    try:
        inspect.signature(step).bind(["items"], "context")
    except TypeError:
        raise ConfigError(f"--diversity '{name}': takes {inspect.signature(step)}, not (items, context) "
                          f"({expected})") from None
    except ValueError:  # no signature to read (a builtin): the call itself will tell
        pass


def new_item(parent: LevelItem, instruction: str | None, lineage: str | None = None) -> LevelItem:
    """An item a step creates: a new lineage (its own root) whose parent link is `parent`.

    Its id is given when the step returns it: the parent's id, the step's tag and a count
    (`d0.L1.prose_only1`, `d0.L1.prose_only2`), so ids are unique by construction across steps.
    It is counted as added by the step that returns it, whatever its `lineage` label.
    """
    item = LevelItem(id=f"{parent['id']}.new", root_id=f"{parent['id']}.new", parent_id=parent["id"],
                     level=parent["level"], instruction=instruction, original=instruction,
                     parent_instruction=parent["instruction"])
    if lineage:
        item["lineage"] = lineage
    return item


def step_tag(name: str) -> str:
    """The part of a step's name that goes into the ids of the items it creates: `breadth`, or the function's name."""
    return name.rpartition(":")[2] or name


def step_tags(names: list[str]) -> list[str]:
    """Each step's tag; a tag two steps share (`a.py:f,b.py:f`) gets the step's position, so that ids stay unique."""
    tags = [step_tag(name) for name in names]
    return [f"{tag}{n}_" if tags.count(tag) > 1 else tag for n, tag in enumerate(tags, start=1)]


def step_names_of(settings: RunSettings) -> list[str]:
    """The steps a run applies, in order (--equality-check first)."""
    if "none" in settings.diversity and len(settings.diversity) > 1:
        raise ConfigError(f"--diversity {','.join(settings.diversity)}: 'none' means no step at all, "
                          "so it cannot be combined with others (drop 'none', or give 'none' alone)")
    names = [n for n in settings.diversity if n != "none"]
    return (["equality"] if settings.equality_check else []) + names


def sort_out(name: str, level: int, inputs: list[LevelItem], returned: object, tag: str | None = None) -> list[list[LevelItem]]:
    """Per input item: itself as the step returned it, then the items the step created from it.

    An input the step did not return is eliminated as `removed_by_step`; a created item
    goes with the input named by its `parent_id` (else the first), is marked `added_by`, and
    gets its id: that input's id, the step's tag and its count among that input's created items.
    """
    tag = tag or step_tag(name)
    if not isinstance(returned, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in returned):
        raise DiversityStepError(f"diversity step '{name}' must return a list of items (dicts with an 'id'), "
                                 f"got {type(returned).__name__}")
    position = {item["id"]: n for n, item in enumerate(inputs)}
    outputs: list[list[LevelItem]] = [[] for _ in inputs]
    made = [0] * len(inputs)
    returned_inputs: set[str] = set()
    created: set[int] = set()
    for item in returned:
        if item["id"] in position and item["id"] not in returned_inputs:
            returned_inputs.add(item["id"])
            outputs[position[item["id"]]].insert(0, item)
            continue
        if not isinstance(item.get("instruction"), str) and not item.get("elimination"):
            raise DiversityStepError(f"diversity step '{name}' created item '{item['id']}' without an instruction")
        if item["id"] in position or id(item) in created:
            raise DiversityStepError(f"diversity step '{name}' returned the item '{item['id']}' twice")
        created.add(id(item))
        attached = position.get(item.get("parent_id"), 0)
        item["parent_id"] = inputs[attached]["id"]
        item.setdefault("added_by", name)
        item["level"] = level
        # The id is made here, not by the step, so that no two steps can make the same one. A created
        # item starts its own lineage: the next level's ids derive from the root, so a root copied
        # from the parent would collide with the parent's own child.
        made[attached] += 1
        item["id"] = item["root_id"] = f"{inputs[attached]['id']}.{tag}{made[attached]}"
        item.setdefault("original", item.get("instruction"))
        outputs[attached].append(item)
    for item, own in zip(inputs, outputs):
        if item["id"] not in returned_inputs:
            eliminate_item(item, "removed_by_step", f"{name} did not return it")
            own.insert(0, item)
    return outputs


def _step_failed(name: str, exc: Exception) -> Exception:
    if isinstance(exc, (FatalLLMError, ConfigError)):
        return exc
    return DiversityStepError(f"diversity step '{name}' failed: {type(exc).__name__}: {exc}".splitlines()[0])


class MicroBatcher:
    """Feeds a list-API step micro-batches of whatever items are ready: up to 64, or those of 100 ms."""

    def __init__(self, name: str, step: DiversityStep, context: StepContext, tag: str):
        self.name, self.step, self.context, self.tag = name, step, context, tag
        self._waiting: list[tuple[LevelItem, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()

    async def __call__(self, item: LevelItem) -> list[LevelItem]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= MICRO_BATCH_ITEMS:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(MICRO_BATCH_SECONDS, self._flush)
        return await future

    def close(self) -> None:
        """Stop what is pending when the level ends early; nothing waits for it any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = []
        for task in list(self._running):
            task.cancel()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[LevelItem, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            outputs = sort_out(self.name, self.context.level, items, await self.step(list(items), self.context), self.tag)
        except Exception as exc:  # handed to every waiting item; the level ends with it
            error = _step_failed(self.name, exc)
            outputs = [error] * len(batch)
        for (_, future), result in zip(batch, outputs):
            if not future.done():
                future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)


class DiversitySteps:
    """The level's steps in order; `apply` passes one item through all of them."""

    def __init__(self, resources: RunResources, level: int):
        context = StepContext(level=level, resources=resources)
        self.steps: list[tuple[str, Callable[[LevelItem], Awaitable[list[LevelItem]]]]] = []
        names = step_names_of(resources.settings)
        for name, tag in zip(names, step_tags(names)):
            if name in BUILT_IN_STEPS:
                self.steps.append((name, self._per_item(name, BUILT_IN_STEPS[name], context, tag)))
            else:
                self.steps.append((name, MicroBatcher(name, load_step(name), context, tag)))

    @staticmethod
    def _per_item(name: str, step: ItemStep, context: StepContext, tag: str):
        async def run(item: LevelItem) -> list[LevelItem]:
            try:
                returned = await step(item, context)
            except Exception as exc:
                raise _step_failed(name, exc) from None
            return sort_out(name, context.level, [item], returned, tag)[0]
        return run

    def close(self) -> None:
        """Cancel the micro-batches still pending (the level ended, or failed)."""
        for _, step in self.steps:
            if isinstance(step, MicroBatcher):
                step.close()

    async def apply(self, item: LevelItem) -> list[LevelItem]:
        """The item and any items created from it, each either eliminated or through every step."""
        live, finished = [item], []
        for _, step in self.steps:
            if not live:
                break
            passed = []
            for outputs in await gather_or_cancel(step(i) for i in live):
                for out in outputs:
                    (finished if out.get("elimination") else passed).append(out)
            live = passed
        return finished + live
