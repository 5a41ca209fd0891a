"""The save path: what a run may write, delete and resume there (DESIGN.md §9).

A run owns only what it wrote. `Manifest` lists every file and folder the tool writes in the save
path (SAVE_PATH/.autoevol-manifest.json, rewritten atomically when a name is added); `--overwrite`
removes those and nothing else, and a file with a result's name that the manifest does not list is
the user's: the run refuses to touch it. A run's identity is its settings (settings.json) and a
content fingerprint of the rows it loaded (input.json): a run asked again with other settings or
changed data is refused, unless the attempt in the directory did nothing (`did_nothing`).

Every way into the graph runs `prepare_run_directory`: run.py before the run, `execute` for the
Python API, and the loader node (Studio starts there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from record_store.loading import SeedSet, read_seed_set
from record_store.store import write_atomically
from settings import RunSettings
from user_errors import ConfigError

MANIFEST_FILE = ".autoevol-manifest.json"
SETTINGS_FILE = "settings.json"
INPUT_FILE = "input.json"
CACHE_FILE = "llm_cache.sqlite"
CHECKPOINT_FILE = "checkpoints.sqlite"
RESULT_FILES = ("records.jsonl", "failures.jsonl", "seeds.jsonl", "method.txt", "run.json", "report.html",
                CHECKPOINT_FILE, SETTINGS_FILE, INPUT_FILE, CACHE_FILE, "usage.json", "publish.json",
                "usage.journal", "dedup_index.json")
DATASET_FOLDER = "dataset"
WHOLLY_OWNED_FOLDERS = (".dataset.building", "shards")
"""Folders only the tool creates and fills (a build in progress, Ray's shard files): removed whole."""
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# Failure reasons a call leaves without any answer (llm_access.client.classify_error): a wrong config's only product.
CALL_ERROR = re.compile(r"^(error|error_\w+|timeout|connection_error|malformed_response|http_\d+)$")
# Names a dataset folder built before the manifest existed holds (adopted as the tool's, see Manifest).
LEGACY_DATASET_FILES = ("README.md", "run_settings.json")


def _folder(name: str) -> str:
    return name.rstrip("/") + "/"


class Manifest:
    """The relative paths the tool wrote in one save path; folders end with "/"."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / MANIFEST_FILE
        self.paths: set[str] = set()
        if self.path.is_file():
            self.paths = set(json.loads(self.path.read_text(encoding="utf-8"))["paths"])
        elif (self.directory / SETTINGS_FILE).is_file() or (self.directory / "run.json").is_file():
            self._adopt_legacy_run()

    def _adopt_legacy_run(self) -> None:
        # A run directory written before the manifest existed: its result files are the tool's.
        self.paths = {name for name in RESULT_FILES if (self.directory / name).exists()}
        self.paths |= {_folder(name) for name in WHOLLY_OWNED_FOLDERS if (self.directory / name).is_dir()}
        dataset = self.directory / DATASET_FOLDER
        if dataset.is_dir():
            self.paths.add(_folder(DATASET_FOLDER))
            for path in dataset.rglob("*"):
                relative = path.relative_to(self.directory).as_posix()
                if path.is_dir() and relative.startswith(f"{DATASET_FOLDER}/data"):
                    self.paths.add(_folder(relative))
                elif (path.name in LEGACY_DATASET_FILES and path.parent == dataset) or \
                        (path.name == "train.parquet" and relative.startswith(f"{DATASET_FOLDER}/data/level_")):
                    self.paths.add(relative)

    def owns(self, relative: str) -> bool:
        """Whether the tool wrote this path (a file or folder, relative to the save path)."""
        relative = relative.rstrip("/")
        if relative in self.paths or _folder(relative) in self.paths:
            return True
        return any(relative.startswith(_folder(folder)) and _folder(folder) in self.paths
                   for folder in WHOLLY_OWNED_FOLDERS)

    def claim(self, *relative: str) -> None:
        """Add paths the tool is about to write; the manifest is rewritten only when one is new."""
        new = set(relative) - self.paths
        if new:
            self.paths |= new
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps({"paths": sorted(self.paths)}, indent=1))

    def foreign_files(self, folder: str) -> list[Path]:
        """Files under `folder` (relative) that the tool did not write."""
        root = self.directory / folder
        if not root.is_dir():
            return []
        return sorted(path for path in root.rglob("*")
                      if not path.is_dir() and not self.owns(path.relative_to(self.directory).as_posix()))

    def remove_owned(self, keep: set[Path] = frozenset()) -> None:
        """Delete every listed file (with its sqlite side files) and folder, except `keep`; a folder that
        still holds a file the tool did not write stays, with that file."""
        if not self.paths:
            return
        folders = sorted((p for p in self.paths if p.endswith("/")), key=len, reverse=True)
        for relative in sorted(self.paths - set(folders)):
            path = self.directory / relative
            if path.resolve() in keep:
                continue
            for side in ("", *SQLITE_SIDE_FILES) if relative.endswith(".sqlite") else ("",):
                with contextlib.suppress(FileNotFoundError):
                    (path.parent / f"{path.name}{side}").unlink()
        for relative in folders:
            path = self.directory / relative
            if relative.rstrip("/") in WHOLLY_OWNED_FOLDERS:
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # not empty: a user's file is still in it
                    path.rmdir()
        self.paths = {p for p in self.paths if (self.directory / p).exists()}
        write_atomically(self.path, json.dumps({"paths": sorted(self.paths)}, indent=1))


@dataclass(frozen=True)
class InputFingerprint:
    """What a run loaded: its row count and a hash of the normalised rows (not the file's path or time)."""

    rows: int
    digest: str

    @classmethod
    def of(cls, seeds: SeedSet) -> "InputFingerprint":
        digest = hashlib.sha256()
        for row in seeds.rows:
            digest.update(json.dumps(row, ensure_ascii=False, sort_keys=True, default=str).encode() + b"\n")
        for refusal in seeds.refused:
            digest.update(json.dumps([refusal["id"], refusal["reason"], refusal["raw"]], ensure_ascii=False).encode())
        return cls(len(seeds.rows) + len(seeds.refused), digest.hexdigest())


def _local_file(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path.resolve() if path.exists() else None


def read_files(settings: RunSettings) -> list[tuple[str, Path]]:
    """The local files a run reads, by flag, resolved (symlinks, relative paths)."""
    named = [("--data-path", _local_file(settings.data_path)), ("--method-file", _local_file(settings.method_file)),
             ("--rules", _local_file(settings.rules_path))]
    named += [("--diversity", _local_file(step.partition(":")[0])) for step in settings.diversity
              if step.partition(":")[0].endswith(".py")]
    return [(flag, path) for flag, path in named if path is not None]


def _written_by_the_run(manifest: Manifest, relative: str) -> bool:
    top = relative.split("/", 1)[0]
    return manifest.owns(relative) or top in RESULT_FILES or top in (DATASET_FOLDER, *WHOLLY_OWNED_FOLDERS)


def refuse_outputs_as_inputs(settings: RunSettings, manifest: Manifest, overwrite: bool) -> None:
    """A file the run reads must never be one it deletes, truncates or rewrites."""
    directory = manifest.directory.resolve()
    for flag, path in read_files(settings):
        if not path.is_relative_to(directory):
            continue
        relative = path.relative_to(directory).as_posix()
        if overwrite and manifest.owns(relative):
            raise ConfigError(f"{flag} {path} is an output of the earlier run in --save-path {settings.save_path}, "
                              "which --overwrite would delete: copy it out of the save path first")
        if _written_by_the_run(manifest, relative):
            raise ConfigError(f"{flag} {path} is a file this run writes in --save-path {settings.save_path}: "
                              "copy it out of the save path first, or use another --save-path")


def refuse_foreign_results(manifest: Manifest) -> None:
    """A file with a result's name, or in dataset/, that the tool did not write is the user's: refuse to touch it."""
    for name in RESULT_FILES:
        if (manifest.directory / name).exists() and not manifest.owns(name):
            raise ConfigError(f"{manifest.directory / name} was not written by autoevol (it is not in "
                              f"{MANIFEST_FILE}): move it, or use another --save-path")
    for name in (DATASET_FOLDER, *WHOLLY_OWNED_FOLDERS):
        if foreign := manifest.foreign_files(name):
            raise ConfigError(f"{foreign[0]} was not written by autoevol, and the run would replace "
                              f"{manifest.directory / name}/: move it, or use another --save-path")


def _answers_in(cache: Path) -> int:
    if not cache.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]
    except sqlite3.Error:
        return 0


def did_nothing(directory: Path) -> bool:
    """Whether the attempt in `directory` got no answer from any LLM, so a resume would keep nothing of it.

    That is: no run.json, no record, no failure but input refusals and failed calls, no output token or
    cached answer in usage.json, and no answer in the save path's cache.
    """
    if (directory / "run.json").exists():
        return False
    if (directory / "records.jsonl").is_file() and (directory / "records.jsonl").stat().st_size:
        return False
    failures = directory / "failures.jsonl"
    if failures.is_file():
        with open(failures, encoding="utf-8") as handle:
            for line in filter(str.strip, handle):
                failure = json.loads(line)
                if failure.get("stage") != "input" and not CALL_ERROR.match(str(failure.get("reason"))):
                    return False
    usage = directory / "usage.json"
    if usage.is_file():
        roles = (json.loads(usage.read_text(encoding="utf-8")).get("token_usage") or {}).items()
        # The endpoint probe's tiny answer checks the config; it is no work a resume would keep.
        if any(u.get("output_tokens", 0) or u.get("cached_calls", 0) for role, u in roles if role != "probe"):
            return False
    return _answers_in(directory / CACHE_FILE) == 0


def _saved(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path}: is not JSON (was it edited?): restore it, or use --overwrite to start fresh") \
            from None


def identity_change(settings: RunSettings, directory: Path, fingerprint: InputFingerprint | None) -> str | None:
    """Why the run saved in `directory` is another run than this one, or None when it is the same (or none)."""
    previous, current = _saved(directory / SETTINGS_FILE), settings.model_dump(mode="json")
    if previous is not None and previous != current:
        changed = sorted(k for k in current if current.get(k) != previous.get(k))
        return f"{directory} holds a run with other settings ({', '.join(changed)} changed)"
    loaded = _saved(directory / INPUT_FILE)
    if fingerprint is not None and loaded is not None and loaded["digest"] != fingerprint.digest:
        return (f"--data-path {settings.data_path} changed since this run started ({loaded['rows']} rows then, "
                f"{fingerprint.rows} now)")
    return None


def prepare_run_directory(settings: RunSettings, overwrite: bool = False, seeds: SeedSet | None = None,
                          cache_path: str | Path | None = None, may_replace: bool = True) -> str | None:
    """Check the save path and claim it for this run; returns a line to print, if any.

    Refuses (ConfigError) a read file the run would write or --overwrite delete, a user's file where a result
    goes, and a different run (settings or input data) unless --overwrite, or unless the attempt there did
    nothing (it is then replaced; not while its checkpoint file is open: `may_replace` False).
    Without `seeds` (the Python API) the rows are read here when a run's fingerprint is there to compare.
    """
    directory = Path(settings.save_path)
    if seeds is None and not overwrite and (directory / INPUT_FILE).is_file():
        seeds = read_seed_set(settings)
    manifest = Manifest(directory)
    refuse_outputs_as_inputs(settings, manifest, overwrite)
    refuse_foreign_results(manifest)
    given_cache = {Path(cache_path).resolve()} if cache_path else set()
    fingerprint = InputFingerprint.of(seeds) if seeds is not None else None
    note = None
    if overwrite:
        manifest.remove_owned(keep=given_cache)
    elif (change := identity_change(settings, directory, fingerprint)) is not None:
        if not may_replace or not did_nothing(directory):
            raise ConfigError(f"{change}: use another --save-path, or --overwrite to start fresh")
        manifest.remove_owned(keep=given_cache | {(directory / CACHE_FILE).resolve()})
        note = f"{change}, but that attempt did nothing (no record, no answer): it is replaced by this run"
    directory.mkdir(parents=True, exist_ok=True)
    owned = [name for name in RESULT_FILES if not (name == CACHE_FILE and cache_path)]
    manifest.claim(*owned, *(_folder(name) for name in (DATASET_FOLDER, *WHOLLY_OWNED_FOLDERS)))
    write_atomically(directory / SETTINGS_FILE, json.dumps(settings.model_dump(mode="json"), ensure_ascii=False,
                                                           indent=2))
    if fingerprint is not None:
        write_atomically(directory / INPUT_FILE, json.dumps({"data_path": settings.data_path, "rows": fingerprint.rows,
                                                            "digest": fingerprint.digest}))
    return note
