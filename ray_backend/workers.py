"""Generation on a Ray cluster: N async actors stream the lineages of their shard, one actor keeps the index.

    driver (stream_level)  --parents by shard_of(root_id)-->  GenerationWorker w0..wN-1
                                                               |  LevelStream, as in one process,
                                                               |  writing SAVE_PATH/shards/w<i>/
                                                               +--signature--> SharedIndex (dedup)
    driver  <--merge at the level's end--  shard files

Each worker builds its own clients from the run's settings with its share of every
endpoint's cap (ray_backend.shards.worker_share): a limiter actor would cost a round trip
per request, and AIMD still adapts per worker below its share. The near-duplicate index
is one plain actor: Ray runs its methods one at a time, so check-and-insert is atomic.
Workers need SAVE_PATH on a filesystem every node sees; the optimization phase stays on the driver.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llm_access.client import TokenBudget
from nodes.generator import PROGRESS_SECONDS, LevelStream, items_in_flight, stream_all
from record_store.near_duplicates import NearDuplicateIndex, signature
from record_store.store import RecordStore
from resources import USAGE_JOURNAL, RunResources, emit
from settings import RunSettings
from state import GenerationState
from user_errors import ConfigError
from ray_backend import WorkerLost
from ray_backend.shards import merge_shards, shard_directory, shard_of, worker_share

REPO = Path(__file__).resolve().parent.parent
FEED_BATCH = 64
WORKER_CONCURRENCY = 10_000
"""Calls an async worker serves at once: feeds, progress and the end of a level are all short or awaiting."""


def runtime_env() -> dict:
    """Workers import this project from the same path as the driver (on a cluster: installed there too)."""
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}}


class SharedNearDuplicates:
    """A worker's view of the run's one index: hashes here, compares and inserts in the index actor."""

    def __init__(self, index: "ray.actor.ActorHandle"):
        self.index = index

    async def add_unless_duplicate(self, item_id: str, root_id: str, text: str) -> str | None:
        return await self.index.add_signature_unless_duplicate.remote(item_id, root_id, signature(text))


@ray.remote(num_cpus=0)
class SharedIndex:
    """The near-duplicate index of the whole run, built from the store once the leftovers are merged."""

    def __init__(self):
        self.index: NearDuplicateIndex | None = None

    def build(self, save_path: str, threshold: float) -> None:
        self.index = NearDuplicateIndex.from_store(RecordStore(save_path), threshold)

    def add_signature_unless_duplicate(self, item_id: str, root_id: str, values) -> str | None:
        return self.index.add_signature_unless_duplicate(item_id, root_id, values)

    def membership(self) -> dict:
        return self.index.membership()


@ray.remote(num_cpus=1)
class GenerationWorker:
    """One shard of the lineages: the driver feeds it parents, it streams them into its own files."""

    def __init__(self, worker: int, settings: RunSettings):
        self.worker, self.settings = worker, settings
        self.resources: RunResources | None = None
        self.stream: LevelStream | None = None
        self.parents: asyncio.Queue | None = None
        self.streaming: asyncio.Task | None = None

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def open(self, workers: int, on_this_node: int, embedded_url: str | None, cache_path: str | None, index) -> None:
        """Build this worker's clients (its share of each cap) and its shard store."""
        if not (Path(self.settings.save_path) / "settings.json").is_file():
            raise ConfigError(f"worker w{self.worker} on {os.uname().nodename} cannot see {self.settings.save_path}: "
                              "with --workers, --save-path must be on a filesystem every node mounts")
        settings = self.settings.model_copy(update={
            "evol_llm": worker_share(self.settings.evol_llm, workers, on_this_node),
            "optim_llm": worker_share(self.settings.optim_llm, workers, on_this_node)})
        resources = RunResources.build(settings, embedded_url=embedded_url, cache_path=cache_path,
                                       journal_name=worker_journal(self.worker))
        resources.llms.prior_usage, resources.llms.prior_cost = {}, {}  # the driver accounts for earlier invocations
        resources.saves_usage = False
        resources.store = RecordStore(shard_directory(settings.save_path, self.worker))
        resources.near_duplicates = SharedNearDuplicates(index)
        self.resources = resources

    def start_level(self, level: int, method: str, method_id: str, budget_tokens: int | None) -> None:
        """Begin streaming a level; `budget_tokens` is this worker's share of what the run may still spend."""
        budget = TokenBudget(budget_tokens)
        for client in self.resources.llms.clients():
            client.budget = budget
        self.stream = LevelStream(self.resources, GenerationState(level=level, method=method, method_id=method_id), total=0)
        window = items_in_flight(self.resources)
        self.parents = asyncio.Queue(maxsize=window)
        self.streaming = asyncio.create_task(stream_all(self._queued(), self.stream.run_parent, window))

    async def _queued(self):
        while (parent := await self.parents.get()) is not None:
            yield parent

    async def _put(self, parent: dict | None) -> None:
        putting = asyncio.ensure_future(self.parents.put(parent))
        await asyncio.wait({putting, self.streaming}, return_when=asyncio.FIRST_COMPLETED)
        if self.streaming.done() and self.streaming.exception() is not None:
            putting.cancel()
            raise self.streaming.exception()

    async def feed(self, parents: list[dict]) -> dict:
        """Queue parents (waiting while the queue is full); raises the level's error if it ended with one."""
        for parent in parents:
            await self._put(parent)
        return self.progress()

    async def finish_level(self) -> dict:
        """Wait until every fed parent is written and flushed; returns the final progress."""
        await self._put(None)
        await self.streaming
        self.resources.store.sync()
        return self.progress()

    def progress(self) -> dict:
        llms, stream = self.resources.llms, self.stream
        return {"done": stream.done, "failures": stream.failures, "added": stream.total,
                "in_flight": sum(client.in_flight for client in llms.clients()), **self.report()}

    def report(self) -> dict:
        """This worker's usage and endpoint figures, and how far its usage journal they cover (taken together)."""
        if self.resources is None:
            return {}
        return {"report": self.resources.llms.worker_report(), "journal_offset": self.resources.journal.offset}


def worker_journal(worker: int) -> str:
    """A worker's usage journal, relative to the save path (resources.prior_usage reads every one)."""
    return str(shard_directory("", worker) / USAGE_JOURNAL)


def note_report(resources: RunResources, worker: int, report: dict) -> None:
    """Take a worker's usage into the run's, with the journal offset it covers, so save_usage stays consistent."""
    resources.llms.worker_reports[f"w{worker}"] = report["report"]
    resources.journal_offsets[worker_journal(worker)] = report["journal_offset"]


def start_ray(workers: int, address: str | None) -> bool:
    """Connect to `address`, or start a local Ray with `workers` CPUs and no dashboard; True when this call started it."""
    if ray.is_initialized():  # the tests start one Ray per session
        return False
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError(f"--ray-address {address}: cannot connect ({str(exc).splitlines()[0]})") from None
    return True


def _cause(exc: Exception) -> Exception:
    """The worker's own exception (a budget stop, a bad key, a failing step), so run.py reports it as in one process."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, Exception):
        return exc.cause
    return WorkerLost(f"a Ray worker was lost ({type(exc).__name__}): run the same command again to resume")


class RayWorkers:
    """The driver's side: starts the workers at the first level, feeds each its shard, merges, stops them."""

    def __init__(self, settings: RunSettings, workers: int, address: str | None = None,
                 embedded_url: str | None = None, cache_path: str | None = None):
        self.settings, self.count, self.address = settings, workers, address
        self.embedded_url = embedded_url
        self.cache_path = str(cache_path or Path(settings.save_path) / "llm_cache.sqlite")
        self.actors: list = []
        self.index = None
        self.started_ray = False
        self.progress: dict[int, dict] = {}
        self._last_emit = 0.0

    def connect(self) -> None:
        """Join or start the cluster before any LLM call, so that a wrong --ray-address ends the run at once."""
        self.started_ray = start_ray(self.count, self.address)

    async def _start(self, resources: RunResources) -> None:
        self.actors = [GenerationWorker.options(max_concurrency=WORKER_CONCURRENCY, scheduling_strategy="SPREAD")
                       .remote(i, self.settings) for i in range(self.count)]
        nodes = await asyncio.gather(*(actor.node.remote() for actor in self.actors))
        driver_node = ray.get_runtime_context().get_node_id()
        self.index = SharedIndex.options(scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False)).remote()
        # Opening a shard store mends a line cut by a killed worker; then the leftovers of a killed
        # driver join the run's files, and only then is the index built from them.
        await asyncio.gather(*(actor.open.remote(self.count, nodes.count(node), self.embedded_url, self.cache_path,
                                                 self.index) for actor, node in zip(self.actors, nodes)))
        merge_shards(resources.store, self.settings.save_path)
        await self.index.build.remote(self.settings.save_path, self.settings.dedup_threshold)

    async def stream_level(self, stream: LevelStream, parents_span: list[int]) -> None:
        """Every pending parent of the level goes to its lineage's worker; their files are merged at the end."""
        resources = stream.resources
        try:
            if not self.actors:
                await self._start(resources)
            else:
                merge_shards(resources.store, self.settings.save_path)
            budget, self.progress = self._budget_share(resources), {}
            await asyncio.gather(*(actor.start_level.remote(stream.level, stream.method, stream.method_id, budget)
                                   for actor in self.actors))
            queues = [asyncio.Queue(maxsize=4) for _ in self.actors]
            senders = [asyncio.ensure_future(self._send(i, queue, stream)) for i, queue in enumerate(queues)]
            try:
                await self._route(stream.pending_parents(parents_span), queues, senders)
                await asyncio.gather(*senders)
            finally:
                for sender in senders:
                    sender.cancel()
            for i, progress in enumerate(await asyncio.gather(*(a.finish_level.remote() for a in self.actors))):
                self._note(i, progress, stream)
        except ray.exceptions.RayError as exc:
            raise _cause(exc) from None
        self._emit(stream, final=True)
        merge_shards(resources.store, self.settings.save_path)

    async def index_membership(self) -> dict:
        """The shared near-duplicate index's members (NearDuplicateIndex.membership)."""
        return await self.index.membership.remote()

    async def _route(self, parents, queues: list[asyncio.Queue], senders: list[asyncio.Future]) -> None:
        batches: list[list[dict]] = [[] for _ in queues]
        for parent in parents:
            shard = shard_of(parent["root_id"], self.count)
            batches[shard].append(parent)
            if len(batches[shard]) >= FEED_BATCH:
                await self._enqueue(queues[shard], batches[shard], senders[shard])
                batches[shard] = []
        for queue, batch, sender in zip(queues, batches, senders):
            await self._enqueue(queue, batch, sender)
            await self._enqueue(queue, None, sender)

    @staticmethod
    async def _enqueue(queue: asyncio.Queue, batch: list[dict] | None, sender: asyncio.Future) -> None:
        # A sender that failed stops taking batches: its error ends the level instead of a wait forever.
        putting = asyncio.ensure_future(queue.put(batch))
        await asyncio.wait({putting, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and not putting.done():
            putting.cancel()
            sender.result()

    async def _send(self, worker: int, queue: asyncio.Queue, stream: LevelStream) -> None:
        while (batch := await queue.get()) is not None:
            if batch:
                self._note(worker, await self.actors[worker].feed.remote(batch), stream)

    def _note(self, worker: int, progress: dict, stream: LevelStream) -> None:
        self.progress[worker] = progress
        note_report(stream.resources, worker, progress)
        stream.resources.save_usage_now_and_then()
        self._emit(stream)

    def _emit(self, stream: LevelStream, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_emit < PROGRESS_SECONDS:
            return
        self._last_emit = now
        usage = stream.resources.llms.usage_this_invocation().values()
        done = [p for p in self.progress.values()]
        emit({"event": "level", "level": stream.level, "done": stream.done + sum(p["done"] for p in done),
              "total": stream.total + sum(p["added"] for p in done),
              "failures": sum(p["failures"] for p in done), "in_flight": sum(p["in_flight"] for p in done),
              "requests": sum(u.get("requests", 0) for u in usage),
              "output_tokens": sum(u.get("output_tokens", 0) for u in usage)})

    def _budget_share(self, resources: RunResources) -> int | None:
        limit = resources.llms.evol.budget.limit
        if limit is None:
            return None
        spent = sum(u.get("input_tokens", 0) + u.get("output_tokens", 0) for u in resources.llms.usage_by_role().values())
        return max(0, limit - spent) // self.count

    async def close(self, resources: RunResources) -> None:
        """Take the workers' last figures, stop them, and stop Ray when this run started it."""
        if self.actors:
            reports = [actor.report.remote() for actor in self.actors]
            done, _ = ray.wait(reports, num_returns=len(reports), timeout=5)
            for i, ref in enumerate(reports):
                if ref in done:
                    try:
                        if report := ray.get(ref):
                            note_report(resources, i, report)
                    except ray.exceptions.RayError:
                        pass  # a worker that died has no figures to give
            for actor in [*self.actors, self.index]:
                if actor is not None:
                    ray.kill(actor)
            self.actors, self.index = [], None
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False
