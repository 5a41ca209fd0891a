"""Issue 18: what the store is told to write is on disk, exactly once, or the write raises."""

from __future__ import annotations

import json
import os

import pytest

from record_store.store import RecordStore


def synced_paths(monkeypatch) -> list[str]:
    """Record the file each os.fsync flushes (by its descriptor's path), and still flush it."""
    synced, real_fsync = [], os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_seeds_and_load_refusals_are_flushed_to_disk_and_seeds_replaced_whole(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    store.seeds_path.write_text('{"old": true}\n', encoding="utf-8")
    synced = synced_paths(monkeypatch)
    seeds = [{"id": "a", "root_id": "a", "level": 0, "instruction": "one", "original": "one"}]
    refused = [{"id": "b", "root_id": "b", "level": 0, "stage": "input", "reason": "empty", "detail": ""}]
    store.write_input(seeds, refused)
    # The seeds were flushed under a temporary name, then renamed over the old file (never truncated in place).
    assert any(path.endswith(".seeds.jsonl.tmp") for path in synced), synced
    assert str(tmp_path / "failures.jsonl") in synced
    assert str(tmp_path) in synced  # the directory: the rename is durable too
    assert [json.loads(line) for line in store.seeds_path.read_text().splitlines()] == seeds
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_load_done_again_after_a_kill_writes_each_refusal_once(tmp_path):
    refused = [{"id": "b", "root_id": "b", "level": 0, "stage": "input", "reason": "empty", "detail": ""}]
    RecordStore(tmp_path).write_input([], refused)
    RecordStore(tmp_path).write_input([], refused)  # the next invocation repeats load_data
    assert len((tmp_path / "failures.jsonl").read_text().splitlines()) == 1
