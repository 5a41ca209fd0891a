"""The save path (record_store/run_directory.py): a run touches only what it wrote, and knows its own input.

The CLI tests run run.py against tests/chat_server.py, a loopback endpoint in its own process.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO, make_settings, run_workflow
from fakes import ScriptedChatModel
from test_resume import CrashAfter
from llm_access.client import FatalLLMError
from user_errors import ConfigError

SMALL_RUN = ("--train-size", "2", "--dev-size", "2", "--batch-size", "2", "--max-steps", "1", "--candidate-size", "2",
             "--loop", "1", "--test-run", "1", "--quiet")


@pytest.fixture(scope="module")
def endpoint(simulated_endpoint):
    """A simulated OpenAI-compatible endpoint whose answers pass the failure rules."""
    return simulated_endpoint


def llm_config(path: Path, base_url: str) -> Path:
    path.write_text(f"preset: local\nembedded: false\nbase_url: {base_url}\nparse_mode: strict\nmax_tokens: 160\n"
                    "max_retries: 1\ntimeout: 5\n", encoding="utf-8")
    return path


def cli_run(config: Path, data: Path, save: Path, *extra: str):
    return run_cli("--data-path", str(data), "--save-path", str(save), "--evol-llm-config", str(config),
                   "--optim-llm-config", str(config), *SMALL_RUN, *extra, timeout=300)


def main_in_process(capsys, *args: str) -> SimpleNamespace:
    """run.py's main in this process (no interpreter start), as a finished command: exit code and stderr."""
    from run import main

    capsys.readouterr()
    returncode = main(list(args))
    return SimpleNamespace(returncode=returncode, stderr=capsys.readouterr().err)


def snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


def test_overwrite_never_deletes_the_file_the_run_reads(tmp_path, endpoint, capsys, monkeypatch):
    config, save = llm_config(tmp_path / "llm.yaml", endpoint), tmp_path / "save"
    first = cli_run(config, REPO / "data" / "sample_seed.jsonl", save)
    assert first.returncode == 0, first.stderr[-2000:]
    records = save / "records.jsonl"
    before = snapshot([records])
    result = cli_run(config, records, save, "--overwrite")
    assert_one_line_error(result, "--data-path", "--overwrite")
    assert snapshot([records]) == before
    # Through a symlink and a relative path, the same file is recognised.
    (tmp_path / "link.jsonl").symlink_to(records)
    monkeypatch.chdir(tmp_path)
    result = main_in_process(capsys, "--data-path", "link.jsonl", "--save-path", str(save), "--evol-llm-config",
                             str(config), "--optim-llm-config", str(config), *SMALL_RUN, "--overwrite")
    assert_one_line_error(result, "--data-path", "--overwrite")
    assert snapshot([records]) == before


def test_the_users_files_in_the_save_path_and_in_dataset_are_never_touched(tmp_path, endpoint, capsys):
    config, save = llm_config(tmp_path / "llm.yaml", endpoint), tmp_path / "save"
    data = REPO / "data" / "sample_seed.jsonl"
    command = ("--data-path", str(data), "--save-path", str(save), "--evol-llm-config", str(config),
               "--optim-llm-config", str(config), *SMALL_RUN)
    assert cli_run(config, data, save).returncode == 0
    beside, mine = save / "notes.txt", save / "dataset" / "my_notes.md"
    beside.write_text("my notes\n")
    mine.write_text("what I wrote about this dataset\n")
    planted = snapshot([beside, mine])

    rebuild = run_cli("--publish-only", str(save))
    assert_one_line_error(rebuild, "my_notes.md")
    again = main_in_process(capsys, *command, "--overwrite")
    assert_one_line_error(again, "my_notes.md")
    assert snapshot([beside, mine]) == planted
    assert (save / "dataset" / "README.md").is_file()  # the folder was not taken apart either

    mine.unlink()
    assert main_in_process(capsys, *command, "--overwrite").returncode == 0
    assert main_in_process(capsys, "--publish-only", str(save)).returncode == 0
    assert snapshot([beside]) == {beside: planted[beside]}
    manifest = json.loads((save / ".autoevol-manifest.json").read_text())["paths"]
    assert "dataset/README.md" in manifest and "notes.txt" not in manifest


def test_a_file_with_a_results_name_that_the_tool_did_not_write_is_refused(tmp_path):
    settings = make_settings(tmp_path)
    save = Path(settings.save_path)
    save.mkdir()
    (save / "records.jsonl").write_text('{"mine": true}\n')
    with pytest.raises(ConfigError, match="records.jsonl was not written by autoevol"):
        run_workflow(settings, ScriptedChatModel())
    assert (save / "records.jsonl").read_text() == '{"mine": true}\n'


def test_overwrite_removes_what_the_manifest_lists_and_nothing_else(tmp_path):
    from record_store.run_directory import prepare_run_directory

    settings = make_settings(tmp_path, test_run=True, max_steps=0, loop=1)
    run_workflow(settings, ScriptedChatModel())
    save = Path(settings.save_path)
    (save / "checkpoints.sqlite-wal").write_bytes(b"left by a crash")
    user = [save / "my.sqlite-wal", save / "report.html.bak", save / "shards.txt"]
    for path in user:
        path.write_text("the user's")
    planted = snapshot(user)
    prepare_run_directory(settings, overwrite=True)
    assert snapshot(user) == planted
    left = sorted(path.name for path in save.iterdir())
    assert left == sorted([".autoevol-manifest.json", "settings.json", *(path.name for path in user)])


def test_a_resume_after_the_data_changed_is_refused_naming_the_file(tmp_path):
    data = tmp_path / "seeds.jsonl"
    lines = (REPO / "data" / "sample_seed.jsonl").read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = make_settings(tmp_path, data_path=str(data), max_steps=2, loop=2, batch_size=2)
    with pytest.raises(FatalLLMError):
        run_workflow(settings, ScriptedChatModel(responder=CrashAfter(40)))
    edited = [line.replace("?", "? Answer briefly.") for line in lines[:50]]
    data.write_text("\n".join(edited) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"--data-path {data} changed since this run started \(60 rows then, 50 now\)"):
        run_workflow(settings, ScriptedChatModel())
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")  # the same rows again: the run resumes
    values = run_workflow(settings, ScriptedChatModel())
    assert values["step"] == 2 and values["rows_in"] == 60


def test_the_fingerprint_is_of_the_rows_not_of_the_file(tmp_path):
    from record_store.loading import read_seed_set
    from record_store.run_directory import InputFingerprint

    lines = (REPO / "data" / "sample_seed.jsonl").read_text(encoding="utf-8").splitlines()
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text("\n".join(lines) + "\n", encoding="utf-8")
    two.write_text("\n\n".join(lines) + "\n", encoding="utf-8")  # other bytes, other mtime, the same rows
    fingerprints = [InputFingerprint.of(read_seed_set(make_settings(tmp_path, data_path=str(p)))) for p in (one, two)]
    assert fingerprints[0] == fingerprints[1] and fingerprints[0].rows == 60


def test_after_a_wrong_endpoint_stopped_the_probe_the_fixed_config_is_accepted(tmp_path, endpoint):
    data, save = REPO / "data" / "sample_seed.jsonl", tmp_path / "save"
    config = llm_config(tmp_path / "llm.yaml", "http://127.0.0.1:9/v1")  # nothing listens there
    failed = cli_run(config, data, save)
    assert_one_line_error(failed, "127.0.0.1:9")
    assert not (save / "records.jsonl").exists() or not (save / "records.jsonl").stat().st_size
    llm_config(config, endpoint)
    fixed = cli_run(config, data, save)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "that attempt did nothing (no record, no answer): it is replaced by this run" in fixed.stderr
    assert json.loads((save / "settings.json").read_text())["evol_llm"]["base_url"] == endpoint
    assert (save / "records.jsonl").stat().st_size > 0


def test_after_a_run_that_did_nothing_new_settings_are_accepted(tmp_path, capsys):
    # The first call fails (a key revoked after the probe, say): the attempt got no answer at all.
    with pytest.raises(FatalLLMError):
        run_workflow(make_settings(tmp_path, max_steps=1, loop=2, batch_size=2), ScriptedChatModel(responder=CrashAfter(1, every_call=True)))
    capsys.readouterr()
    values = run_workflow(make_settings(tmp_path, max_steps=1, loop=3, batch_size=2), ScriptedChatModel())
    assert "that attempt did nothing (no record, no answer): it is replaced by this run" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["loop"] == 3
    assert values["level"] == 3


def test_a_run_that_did_something_still_refuses_new_settings(tmp_path):
    settings = make_settings(tmp_path, max_steps=2, loop=2, batch_size=2)
    with pytest.raises(FatalLLMError):
        run_workflow(settings, ScriptedChatModel(responder=CrashAfter(5)))  # four answers, then a revoked key
    with pytest.raises(ConfigError, match=r"other settings \(loop changed\)"):
        run_workflow(make_settings(tmp_path, max_steps=2, loop=3, batch_size=2), ScriptedChatModel())


def test_a_run_that_writes_no_record_exits_1_naming_the_reasons(tmp_path, endpoint):
    # Usable rows whose every response a rule eliminates: the run itself ends with nothing made.
    # (Rows refused at input stop earlier, in the check, with exit 2: tests/unit/test_real_input.py.)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, "instruction": f"Explain topic number {i} in three steps."}) + "\n"
                            for i in range(4)), encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    rules.write_text("response:\n  rules:\n    - reason: planted_failure\n      contains: [A complete answer]\n",
                     encoding="utf-8")
    result = run_cli("--data-path", str(data), "--save-path", str(tmp_path / "save"), "--max-steps", "0",
                     "--rules", str(rules), "--diversity", "none", "--loop", "1",
                     "--evol-llm-config", str(llm_config(tmp_path / "llm.yaml", endpoint)), "--quiet", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert_one_line_error(result, "no record was written: 4 rows in, all failed", "failures.jsonl",
                          "planted_failure 4")


def test_a_run_directory_from_before_the_manifest_is_the_tools_but_not_the_users_files_in_it(tmp_path):
    from record_store.run_directory import prepare_run_directory

    settings = make_settings(tmp_path, test_run=True, max_steps=0, loop=1)
    run_workflow(settings, ScriptedChatModel())
    save = Path(settings.save_path)
    (save / ".autoevol-manifest.json").unlink()  # as an older version left it
    mine = save / "dataset" / "data" / "my_split.parquet"
    mine.write_bytes(b"not the tool's")
    with pytest.raises(ConfigError, match="my_split.parquet was not written by autoevol"):
        prepare_run_directory(settings, overwrite=True)
    mine.unlink()
    prepare_run_directory(settings, overwrite=True)
    assert sorted(path.name for path in save.iterdir()) == [".autoevol-manifest.json", "settings.json"]


def test_overwrite_keeps_the_cache_given_with_cache(tmp_path):
    from record_store.run_directory import prepare_run_directory

    settings = make_settings(tmp_path, test_run=True, max_steps=0, loop=1)
    run_workflow(settings, ScriptedChatModel())  # its cache is SAVE_PATH/llm_cache.sqlite
    cache = Path(settings.save_path) / "llm_cache.sqlite"
    before = snapshot([cache])
    prepare_run_directory(settings, overwrite=True, cache_path=str(cache))
    assert snapshot([cache]) == before and not (Path(settings.save_path) / "records.jsonl").exists()
