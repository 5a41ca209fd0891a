"""What a Ray run shares out and gathers back, with no Ray in it: lineage shards, cap shares, shard files.

A lineage (root id) always goes to the same worker, so a worker's shard files hold whole
lineages. Each worker appends to its own records.jsonl and failures.jsonl under
SAVE_PATH/shards/w<i>/; the driver merges them into the run's files level by level, and
remembers how far it merged so that a merge reads only what is new.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from urllib.parse import urlparse

from llm_access.config import LLMConfig
from record_store.store import RecordStore, repair_partial_line, write_atomically

SHARDS_DIR = "shards"
MERGED_FILE = "merged.json"
MERGE_LINES = 10_000
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def shard_of(root_id: str, workers: int) -> int:
    """The worker that owns a lineage: a hash that is the same in every process and every run."""
    return zlib.crc32(root_id.encode("utf-8")) % workers


def shard_directory(save_path: str | Path, worker: int) -> Path:
    return Path(save_path) / SHARDS_DIR / f"w{worker}"


def is_loopback(url: str) -> bool:
    """Whether a URL names the machine it is used on: then each node has its own server behind it."""
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS


def worker_share(config: LLMConfig, workers: int, on_this_node: int) -> LLMConfig:
    """One worker's part of a config's limits, so that the caps hold across workers.

    A remote endpoint is shared by all `workers`; a loopback one only by the workers on this
    node (a GPU node serving its own model). Each endpoint's cap is divided (at least 1 each),
    and so are requests_per_second and tokens_per_minute, which count over all endpoints.
    """
    endpoints = [e.model_copy(update={"concurrency": max(1, e.concurrency // (on_this_node if is_loopback(e.base_url)
                                                                                 else workers))})
                 for e in config.endpoint_list()]
    rates = {name: value / workers for name in ("requests_per_second", "tokens_per_minute")
             if (value := getattr(config, name)) is not None}
    if len({e.concurrency for e in endpoints}) == 1 and config.endpoints is None:
        # One cap for all keeps base_url as it is, and with it the answer-cache key.
        return config.model_copy(update={"concurrency": endpoints[0].concurrency, **rates})
    return config.model_copy(update={"endpoints": endpoints, "base_url": None, **rates})


def _merged_offsets(directory: Path) -> dict[str, int]:
    path = directory / MERGED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def merge_shards(store: RecordStore, save_path: str | Path) -> int:
    """Append every shard line the run's files lack; returns how many were new.

    Each (id, level) is written once: a line the run's files hold already is skipped, so a merge
    cut short by a killed driver is simply done again. Call it only while no worker writes (none is
    started, or all have finished their level); every level calls it before it streams, whatever
    the number of workers, so that what a killed run left in the shards joins its own level.
    """
    added = 0
    for directory in sorted((Path(save_path) / SHARDS_DIR).glob("w*")):
        offsets = _merged_offsets(directory)
        for name, path in (("failures.jsonl", store.failures_path), ("records.jsonl", store.records_path)):
            if not (directory / name).is_file():
                continue
            repair_partial_line(directory / name)  # a line a killed worker cut; its parent is done again
            batch, offset = [], offsets.get(name, 0)
            for offset, item in store.iter_range(directory / name, offsets.get(name, 0), None):
                batch.append(item)
                if len(batch) >= MERGE_LINES:
                    # A line the run's files hold already (a merge cut short, or an invocation without
                    # workers that did its parent again) is skipped.
                    added, batch = added + store.adopt(path, batch), []
            added += store.adopt(path, batch)
            offsets[name] = offset
        # Written after the lines reach the run's files: a crash in between merges them again, which adds nothing.
        write_atomically(directory / MERGED_FILE, json.dumps(offsets))
    return added
