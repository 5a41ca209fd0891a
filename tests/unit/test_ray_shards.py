"""The Ray-free parts of --workers: stable shards, cap shares, shard merging, one cache for several processes."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO, fake_llm_config
from llm_access.client import AnswerCache
from llm_access.config import LLMConfig
from ray_backend.shards import merge_shards, shard_directory, shard_of, worker_share
from record_store.store import RecordStore


def test_a_lineage_has_one_shard_in_every_process():
    ids = [f"row_{n}" for n in range(200)]
    here = [shard_of(i, 3) for i in ids]
    # A fresh interpreter has another str hash seed: the shard must not depend on it.
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from ray_backend.shards import shard_of; " \
           f"print([shard_of(i, 3) for i in {ids!r}])"
    there = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert here == there and set(here) == {0, 1, 2}
    assert min(here.count(s) for s in range(3)) > 40  # roughly even


def test_caps_and_rates_are_split_so_that_they_hold_across_workers():
    remote = fake_llm_config("evol", base_url="https://api.example.com/v1", concurrency=16, requests_per_second=10.0)
    share = worker_share(remote, workers=4, on_this_node=1)
    assert share.concurrency == 4 and share.requests_per_second == 2.5
    assert share.base_url == remote.base_url  # one endpoint keeps its URL, and with it the answer-cache key

    fields = fake_llm_config("evol").model_dump()
    fields.update(base_url=None, endpoints=[{"base_url": "http://127.0.0.1:8000/v1", "concurrency": 32},
                                            {"base_url": "http://10.0.0.9:8000/v1", "concurrency": 9}])
    pool = LLMConfig(**fields)
    # Two workers on this node share its localhost server; all four share the remote one (never below 1).
    split = worker_share(pool, workers=4, on_this_node=2)
    assert [(e.base_url, e.concurrency) for e in split.endpoint_list()] == [
        ("http://127.0.0.1:8000/v1", 16), ("http://10.0.0.9:8000/v1", 2)]
    assert worker_share(remote.model_copy(update={"concurrency": 2}), workers=4, on_this_node=1).concurrency == 1


def _row(item_id: str, level: int, **extra) -> dict:
    return {"id": item_id, "root_id": item_id.split(".")[0], "level": level, "instruction": f"text of {item_id}", **extra}


def test_merging_shards_writes_each_row_once_and_only_reads_what_is_new(tmp_path):
    store = RecordStore(tmp_path)
    w0, w1 = RecordStore(shard_directory(tmp_path, 0)), RecordStore(shard_directory(tmp_path, 1))
    w0.add_records([_row("a.L1", 1), _row("b.L1", 1)])
    w1.add_records([_row("c.L1", 1)])
    w1.add_failures([_row("d.L1", 1, stage="evolve", reason="unchanged")])
    assert merge_shards(store, tmp_path) == 4

    w0.add_records([_row("e.L1", 1)])
    # A driver killed after appending but before noting how far it merged merges the same lines again: nothing doubles.
    (shard_directory(tmp_path, 1) / "merged.json").unlink()
    assert merge_shards(store, tmp_path) == 1
    assert merge_shards(store, tmp_path) == 0
    again = RecordStore(tmp_path)  # what a resumed driver reads
    records = [json.loads(line) for line in store.records_path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["a.L1", "b.L1", "c.L1", "e.L1"]
    assert again.level_tally(1) == {"records": 4, "failures": 1, "added": 0}


def _put_many(path: str, worker: int, count: int) -> None:
    cache = AnswerCache(path)
    for n in range(count):
        cache.put(f"w{worker}-{n}", f"answer {worker}/{n}")
    cache.close()


def test_several_processes_write_one_answer_cache_at_once(tmp_path):
    # Ray workers on one machine open the run's cache file together (WAL; a writer waits for the lock).
    path = str(tmp_path / "cache.sqlite")
    AnswerCache(path).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_put_many, args=(path, worker, 300)) for worker in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    cache = AnswerCache(path)
    assert all(cache.get(f"w{w}-{n}") == f"answer {w}/{n}" for w in range(3) for n in range(300))


@pytest.mark.parametrize("args, words", [
    (["--ray-address", "auto"], ["--ray-address", "--workers"]),
    (["--workers", "0"], ["--workers", "at least 1"]),
])
def test_worker_flags_misused_are_one_line(tmp_path, args, words):
    result = run_cli("--save-path", str(tmp_path / "out"), "--evol-llm-config", "openai", *args,
                     env_extra={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 2
    if args[0] == "--workers":  # argparse's own usage error names the flag
        assert all(w in result.stderr for w in words) and "Traceback" not in result.stderr
    else:
        assert_one_line_error(result, *words)
