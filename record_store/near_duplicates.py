"""Near-duplicate detection over character n-grams with MinHash LSH.

Character n-grams need no tokenizer, so Korean and English are treated alike. datasketch
computes the signatures and chooses the bands; the index itself lives in a private
temporary SQLite file, so a run's memory stays flat however many rows and levels it has
(datasketch's in-memory index keeps a Python set per bucket: about 60 MB at 40k items).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from failure_checks.rules import char_shingles
from record_store.store import RecordStore, write_atomically

NUM_PERM = 64
IN_DEDUP_INDEX = "in_dedup_index"
"""The field of a record or failure line whose item joined the index (it passed dedup)."""
MEMBERSHIP_FILE = "dedup_index.json"
_TEMPLATE = MinHash(num_perm=NUM_PERM)
# Random odd multipliers and per-band salts fold a band's values into one 64-bit bucket key.
_RANDOM = np.random.default_rng(20240600)
_MULTIPLIERS = _RANDOM.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)
_SALTS = _RANDOM.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)


def signature(text: str) -> np.ndarray:
    """The text's MinHash values (each below 2**32, so stored as uint32)."""
    # Reusing the permutations skips datasketch's per-object setup, most of the cost.
    minhash = MinHash(num_perm=NUM_PERM, permutations=_TEMPLATE.permutations, scheme=_TEMPLATE.scheme)
    minhash.update_batch([shingle.encode() for shingle in char_shingles(text)])
    return minhash.hashvalues.astype(np.uint32)


class NearDuplicateIndex:
    """Instructions seen so far; finds one of another lineage at or above the similarity threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        chosen = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)  # only for its choice of bands
        self._bands, self._rows = chosen.b, chosen.r
        # "" is SQLite's private temporary database: on disk, deleted when closed or on exit.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.executescript("""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE items (item INTEGER PRIMARY KEY, item_id TEXT UNIQUE, root_id TEXT, signature BLOB);
            CREATE TABLE buckets (bucket INTEGER, item INTEGER, PRIMARY KEY (bucket, item)) WITHOUT ROWID;
        """)

    def _buckets(self, values: np.ndarray) -> list[int]:
        used = self._bands * self._rows
        bands = (values[:used].astype(np.uint64) * _MULTIPLIERS[:used]).reshape(self._bands, self._rows)
        return (bands.sum(axis=1) + _SALTS[: self._bands]).view(np.int64).tolist()

    def add(self, item_id: str, root_id: str, text: str) -> None:
        self._add(item_id, root_id, signature(text))

    def find(self, text: str, exclude_root: str | None = None) -> str | None:
        """The id of the most similar indexed item of another lineage, if similar enough."""
        return self._find(signature(text), exclude_root)

    def add_unless_duplicate(self, item_id: str, root_id: str, text: str) -> str | None:
        """`find`, then `add` when nothing matched; returns the match. Hashes the text once."""
        return self.add_signature_unless_duplicate(item_id, root_id, signature(text))

    def add_signature_unless_duplicate(self, item_id: str, root_id: str, values: np.ndarray) -> str | None:
        """`add_unless_duplicate` for a text hashed elsewhere (a Ray worker hashes, the shared index compares)."""
        match = self._find(values, root_id)
        if match is None:
            self._add(item_id, root_id, values)
        return match

    def _add(self, item_id: str, root_id: str, values: np.ndarray) -> None:
        inserted = self._db.execute("INSERT OR IGNORE INTO items (item_id, root_id, signature) VALUES (?, ?, ?)",
                                    (item_id, root_id, values.tobytes()))
        if inserted.rowcount:
            item = inserted.lastrowid
            self._db.executemany("INSERT OR IGNORE INTO buckets VALUES (?, ?)",
                                 [(bucket, item) for bucket in self._buckets(values)])

    def _find(self, values: np.ndarray, exclude_root: str | None) -> str | None:
        buckets = self._buckets(values)
        candidates = self._db.execute(
            "SELECT item_id, root_id, signature FROM items WHERE item IN "
            f"(SELECT item FROM buckets WHERE bucket IN ({','.join('?' * len(buckets))}))", buckets)
        best: tuple[float, str] | None = None
        for item_id, root_id, stored in candidates:
            # An evolved instruction contains much of its own parent: its lineage does not count.
            if root_id == exclude_root:
                continue
            similarity = float(np.count_nonzero(np.frombuffer(stored, dtype=np.uint32) == values)) / NUM_PERM
            if similarity >= self.threshold and (best is None or (similarity, item_id) > best):
                best = (similarity, item_id)
        return best[1] if best else None

    def close(self) -> None:
        self._db.close()

    def membership(self) -> dict:
        """How many items the index holds and a digest of their ids, to compare two indexes."""
        digest, members = hashlib.sha256(), 0
        for (item_id,) in self._db.execute("SELECT item_id FROM items ORDER BY item_id"):
            digest.update(item_id.encode() + b"\n")
            members += 1
        return {"members": members, "sha256": digest.hexdigest()}

    @classmethod
    def from_store(cls, store: RecordStore, threshold: float) -> "NearDuplicateIndex":
        """The index as the run left it: the seeds, and every record or failure marked as having passed dedup.

        Not every record: an item a step created after dedup (breadth, by default) never joined
        the live index, and an item that passed dedup and then failed (at respond, or by a later
        step) did. The mark is written with the item, so a resume rebuilds the same index.
        """
        index = cls(threshold)
        for _, seed in store.iter_range(store.seeds_path, 0, None):
            index.add(seed["id"], seed["root_id"], seed["instruction"])
        for path in (store.records_path, store.failures_path):
            for _, item in store.iter_range(path, 0, None):
                if item.get(IN_DEDUP_INDEX):
                    index.add(item["id"], item["root_id"], item["instruction"])
        return index


def write_membership(save_path: str | Path, level: int, membership: dict) -> None:
    """Record the live index's membership at a level's end (run.json's neighbour dedup_index.json)."""
    write_atomically(Path(save_path) / MEMBERSHIP_FILE, json.dumps({"level": level, **membership}))
