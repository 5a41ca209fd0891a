"""Near-duplicate detection over character n-grams with MinHash LSH (datasketch).

Character n-grams need no tokenizer, so Korean and English are treated alike.
"""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

from records import RecordStore

NGRAM = 3
NUM_PERM = 64
_SPACES = re.compile(r"\s+")
_TEMPLATE = MinHash(num_perm=NUM_PERM)


def shingles(text: str, n: int = NGRAM) -> set[bytes]:
    """Lowercased character n-grams, whitespace runs read as one space."""
    normalized = _SPACES.sub(" ", text.lower()).strip()
    if len(normalized) <= n:
        return {normalized.encode()}
    return {normalized[i : i + n].encode() for i in range(len(normalized) - n + 1)}


class NearDuplicateIndex:
    """Instructions seen so far; finds one of another lineage at or above the similarity threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._signatures: dict[str, MinHash] = {}
        self._roots: dict[str, str] = {}

    @staticmethod
    def _signature(text: str) -> MinHash:
        # Reusing the permutations skips datasketch's per-object setup, most of the cost.
        signature = MinHash(num_perm=NUM_PERM, permutations=_TEMPLATE.permutations, scheme=_TEMPLATE.scheme)
        signature.update_batch(list(shingles(text)))
        return signature

    def add(self, item_id: str, root_id: str, text: str) -> None:
        if item_id in self._signatures:
            return
        signature = self._signature(text)
        self._lsh.insert(item_id, signature)
        self._signatures[item_id] = signature
        self._roots[item_id] = root_id

    def find(self, text: str, exclude_root: str | None = None) -> str | None:
        """The id of the most similar indexed item of another lineage, if similar enough."""
        signature = self._signature(text)
        # An evolved instruction contains much of its own parent: its lineage does not count.
        candidates = [c for c in self._lsh.query(signature) if self._roots[c] != exclude_root]
        scored = [(signature.jaccard(self._signatures[c]), c) for c in candidates]
        scored = [(similarity, c) for similarity, c in scored if similarity >= self.threshold]
        return max(scored)[1] if scored else None

    @classmethod
    def from_store(cls, store: RecordStore, threshold: float) -> "NearDuplicateIndex":
        """Everything that passed dedup before: seeds, records, and items that failed only at respond."""
        index = cls(threshold)
        for _, seed in store.iter_range(store.seeds_path, 0, None):
            index.add(seed["id"], seed["root_id"], seed["instruction"])
        for _, record in store.iter_range(store.records_path, 0, None):
            index.add(record["id"], record["root_id"], record["instruction"])
        for _, failure in store.iter_range(store.failures_path, 0, None):
            if failure["stage"] == "respond" and failure.get("instruction"):
                index.add(failure["id"], failure["root_id"], failure["instruction"])
        return index
