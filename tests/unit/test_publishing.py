"""publishing/: the dataset folder every run writes, its card, and the upload to a (loopback) hub."""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

from cli_helpers import assert_one_line_error, run_cli
from conftest import REPO, fake_llm_config, make_settings, run_workflow
from fakes import ScriptedChatModel
from publishing.dataset_folder import build_dataset_folder, save_options
from publishing.languages import language_of

SECRET = "sk-publish-test-0123456789SECRET"
HUB_TOKEN = "hf_publishtest0123456789TOKEN"
KOREAN_DIR = "결과"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run of ten Korean and English seeds, its key and hub token set in the environment.

    The key is also pasted into an extra_body field whose name does not look secret (a field named
    like a key is refused when the config is read), where a careless user might put it.
    """
    base = tmp_path_factory.mktemp("run") / KOREAN_DIR
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AUTOEVOL_PUBLISH_KEY", SECRET)
        env.setenv("HF_TOKEN", HUB_TOKEN)
        keyed = fake_llm_config("evol", api_key_env="AUTOEVOL_PUBLISH_KEY", extra_body={"user": SECRET})
        settings = make_settings(base, test_run=True, max_steps=1, loop=2, evol_llm=keyed)
        save_options(Path(settings.save_path), "apache-2.0", None)
        run_workflow(settings, ScriptedChatModel())
    return Path(settings.save_path)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_train(folder: Path, config: str | None = None) -> datasets.Dataset:
    # A cache per folder: datasets keys local files by name and mtime, and every folder here is named "dataset".
    datasets.disable_progress_bars()
    return datasets.load_dataset(str(folder), config, split="train", cache_dir=str(folder.parent / "hf-cache"))


def test_every_finished_run_writes_a_folder_that_datasets_loads(finished_run):
    folder, records = finished_run / "dataset", jsonl(finished_run / "records.jsonl")
    default = load_train(folder)
    assert len(records) > 0 and len(default) == len(records)
    assert sorted(default["id"]) == sorted(r["id"] for r in records)
    for level in sorted({r["level"] for r in records}):
        rows = load_train(folder, f"level_{level}")
        assert set(rows["level"]) == {level}
        assert len(rows) == sum(r["level"] == level for r in records)
    assert set(default.column_names) == {"id", "root_id", "parent_id", "level", "instruction", "response",
                                         "original", "method_id", "lineage", "messages"}


def test_messages_are_a_user_and_assistant_chat(finished_run):
    by_id = {r["id"]: r for r in jsonl(finished_run / "records.jsonl")}
    for row in load_train(finished_run / "dataset"):
        assert row["messages"] == [{"role": "user", "content": by_id[row["id"]]["instruction"]},
                                   {"role": "assistant", "content": by_id[row["id"]]["response"]}]
        assert row["lineage"] == "depth" and row["original"] == by_id[row["id"]]["original"]


def test_card_metadata_parses_with_license_languages_and_configs(finished_run):
    card = DatasetCard.load(finished_run / "dataset" / "README.md")
    levels = sorted({r["level"] for r in jsonl(finished_run / "records.jsonl")})
    assert card.data.license == "apache-2.0"
    assert set(card.data.language) == {"ko", "en"}
    assert {"synthetic", "auto-evol-instruct"} <= set(card.data.tags)
    assert card.data.task_categories == ["text-generation"] and card.data.size_categories == ["n<1K"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in card.data.configs}
    assert configs == {"default": [f"data/level_{n}/train.parquet" for n in levels],
                       **{f"level_{n}": f"data/level_{n}/train.parquet" for n in levels}}


def test_card_body_carries_the_method_history_levels_and_a_reproducing_command(finished_run):
    run = json.loads((finished_run / "run.json").read_text(encoding="utf-8"))
    text = (finished_run / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "2406.00770" in text and run["method"] in text
    for candidate in run["history"][0]["candidates"]:
        assert f"| 1 | `{candidate['method_id']}` |" in text
    assert f"| 0 | `e0` | - | {run['e0_score']['failure_rate']:.3f} |" in text
    assert "| 1 | 10 | 0 |" in text and "| 2 |" in text  # counts of levels 1 and 2
    assert f"{run['quality']['1']['mean_length']:.3f}" in text
    evolve = run["token_usage"]["evolve"]
    assert f"| evolve | {evolve['requests']} | {evolve['cached_calls']} | {evolve['input_tokens']} |" in text
    command = text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert command.endswith("--license apache-2.0")


def test_the_reproducing_command_parses_back_to_the_same_settings(finished_run):
    from run import build_parser
    from settings import settings_from_inputs

    run = json.loads((finished_run / "run.json").read_text(encoding="utf-8"))
    command = (finished_run / "dataset" / "README.md").read_text(encoding="utf-8").split("```bash\n")[1].split("\n")[0]
    settings, _ = settings_from_inputs(vars(build_parser().parse_args(shlex.split(command)[2:])))
    rebuilt = settings.model_dump(mode="json")
    for name, value in run["settings"].items():
        if name == "data_path":  # a local file is shown by its base name only
            assert rebuilt[name] == Path(value).name
        elif name not in ("save_path", "evol_llm", "optim_llm"):
            assert rebuilt[name] == value, name


def test_korean_is_written_unescaped(finished_run, tmp_path):
    copy = tmp_path / KOREAN_DIR
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("dataset"))
    records = jsonl(copy / "records.jsonl")  # Korean rows first, so each level's sample is Korean
    records.sort(key=lambda r: language_of(r["instruction"]) != "ko")
    (copy / "records.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    folder = build_dataset_folder(copy)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert language_of(records[0]["instruction"]) == "ko" and records[0]["instruction"] in card
    shared = (folder / "run_settings.json").read_text(encoding="utf-8")
    assert "\\u" not in shared + card
    assert load_train(folder)[0]["instruction"] == records[0]["instruction"]


def test_no_secret_is_anywhere_in_the_folder(finished_run):
    files = [path for path in (finished_run / "dataset").rglob("*") if path.is_file()]
    assert {"README.md", "run_settings.json", "train.parquet"} <= {path.name for path in files}
    assert SECRET in (finished_run / "run.json").read_text(encoding="utf-8")  # the key really was in the run
    for path in files:
        content = path.read_bytes()
        assert SECRET.encode() not in content and HUB_TOKEN.encode() not in content, path
    shared = json.loads((finished_run / "dataset" / "run_settings.json").read_text(encoding="utf-8"))
    assert shared["settings"]["evol_llm"]["api_key_env"] == "AUTOEVOL_PUBLISH_KEY"


def test_a_rebuild_follows_the_files_and_an_unknown_license_is_said_plainly(finished_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("dataset", "publish.json"))
    kept = [line for line in (copy / "records.jsonl").read_text(encoding="utf-8").splitlines()
            if json.loads(line)["level"] == 1]
    (copy / "records.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    folder = build_dataset_folder(copy)
    assert len(load_train(folder)) == len(kept)
    card = DatasetCard.load(folder / "README.md")
    # datasets cannot load a split without rows: an emptied level is counted in the card but has no config
    assert [c["config_name"] for c in card.data.configs] == ["default", "level_1"]
    assert not (folder / "data" / "level_2").exists() and "| 2 | 10 | 0 | 0 |" in card.text
    assert card.data.license == "unknown" and "**Unknown.** The publisher did not state a license" in card.text


def test_the_seeds_original_answer_becomes_reference(tmp_path):
    settings = make_settings(tmp_path, data_path=str(REPO / "tests" / "data" / "alpaca_tasks.jsonl"),
                             response_field="output", max_steps=0, loop=1)
    run_workflow(settings, ScriptedChatModel())
    outputs = {r["id"]: r["output"] for r in jsonl(REPO / "tests" / "data" / "alpaca_tasks.jsonl")}
    rows = load_train(Path(settings.save_path) / "dataset")
    assert len(rows) > 0 and all(row["reference"] == outputs[row["root_id"]] for row in rows)
    assert DatasetCard.load(Path(settings.save_path) / "dataset" / "README.md").data.language == ["en"]


def test_a_failing_folder_build_keeps_run_json_and_warns(tmp_path, monkeypatch, capsys):
    import nodes.finalizer

    def broken(directory):
        raise OSError("disk full")

    monkeypatch.setattr(nodes.finalizer, "build_dataset_folder", broken)
    settings = make_settings(tmp_path, test_run=True, max_steps=0, loop=1)
    run_workflow(settings, ScriptedChatModel())
    assert json.loads((Path(settings.save_path) / "run.json").read_text(encoding="utf-8"))["method_id"] == "e0"
    assert not (Path(settings.save_path) / "dataset").exists()
    assert "warning: dataset/ could not be written (disk full); retry with --publish-only" in capsys.readouterr().err


def test_languages_come_from_the_script():
    assert language_of("서울에서 부산까지 KTX로 얼마나 걸리나요?") == "ko"
    assert language_of("How long does the KTX take from Seoul to Busan?") == "en"
    assert language_of("東京から大阪まで新幹線でどのくらいかかりますか") == "ja"
    assert language_of("从北京到上海坐高铁要多久") == "zh"
    assert language_of("Combien de temps faut-il pour aller de Séoul à Busan ?") is None  # Latin, not English
    assert language_of("12345 !!") is None


# --- the hub -----------------------------------------------------------------------------------


class LoopbackHub(BaseHTTPRequestHandler):
    """The four routes upload_folder calls: create repo, validate the card, preupload, commit."""

    status = 200
    received: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        if self.status != 200:
            return self.answer(self.status, {"error": "Invalid credentials in Authorization header"})
        if self.path == "/api/repos/create":
            name = json.loads(body)["name"]
            return self.answer(200, {"url": f"http://{self.headers['Host']}/datasets/me/{name}"})
        if self.path == "/api/validate-yaml":
            return self.answer(200, {"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self.answer(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/commit/" in self.path:
            url = f"http://{self.headers['Host']}/datasets/me/evolved/commit/abc"
            return self.answer(200, {"commitUrl": url, "commitOid": "abc"})
        return self.answer(404, {"error": f"no route {self.path}"})

    def answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def hub(monkeypatch):
    """A loopback hub answering `status` to everything that is not 200; HF_ENDPOINT points at it."""
    handler = type("Hub", (LoopbackHub,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("MY_HF_TOKEN", raising=False)
    yield handler
    server.shutdown()
    server.server_close()


def committed_files(received: list[dict]) -> dict[str, bytes]:
    commit = next(r for r in received if "/commit/" in r["path"])
    lines = [json.loads(line) for line in commit["body"].splitlines()]
    return {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"}


@pytest.mark.parametrize("variable", ["HF_TOKEN", "MY_HF_TOKEN"])
def test_publish_only_uploads_the_folder_with_the_token_in_the_header_only(finished_run, hub, monkeypatch, capsys,
                                                                           variable):
    from run import main

    monkeypatch.setenv(variable, HUB_TOKEN)
    run_dir = finished_run.parent / f"publish-{variable}"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("dataset"))
    assert main(["--publish-only", str(run_dir), "--push-to-hub", "me/evolved", "--private"]) == 0
    assert "pushed to the hub: http://127.0.0.1:" in capsys.readouterr().out
    assert [r["path"] for r in hub.received] == ["/api/repos/create", "/api/validate-yaml",
                                                 "/api/datasets/me/evolved/preupload/main",
                                                 "/api/datasets/me/evolved/commit/main"]
    assert all(r["authorization"] == f"Bearer {HUB_TOKEN}" for r in hub.received)
    create = json.loads(hub.received[0]["body"])
    assert create["type"] == "dataset" and create["visibility"] == "private"
    folder = run_dir / "dataset"
    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    arrived = committed_files(hub.received)
    assert arrived == local and "README.md" in arrived and "data/level_1/train.parquet" in arrived
    assert all(HUB_TOKEN.encode() not in content for content in arrived.values())
    assert 'load_dataset("me/evolved", split="train")' in arrived["README.md"].decode()


def test_a_refused_token_is_one_line_and_leaves_the_folder_complete(finished_run, hub, monkeypatch, capsys):
    from run import main

    hub.status = 401
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    run_dir = finished_run.parent / "refused"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("dataset"))
    assert main(["--publish-only", str(run_dir), "--push-to-hub", "me/evolved"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "401" in errors[0] and "Traceback" not in err
    assert len(load_train(run_dir / "dataset")) == len(jsonl(run_dir / "records.jsonl"))


def test_an_unreachable_hub_is_one_line(finished_run, hub, monkeypatch, capsys):
    from run import main

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    run_dir = finished_run.parent / "offline"
    shutil.copytree(finished_run, run_dir)
    assert main(["--publish-only", str(run_dir), "--push-to-hub", "me/evolved"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not be reached" in errors[0] and "--publish-only" in errors[0]
    assert (run_dir / "dataset" / "README.md").is_file()


def test_a_missing_token_stops_before_any_work(finished_run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (finished_run / "dataset").rglob("*")}
    env = {"HF_TOKEN": "", "MY_HF_TOKEN": ""}
    result = run_cli("--publish-only", str(finished_run), "--push-to-hub", "me/evolved", env_extra=env)
    assert_one_line_error(result, "HF_TOKEN")
    assert {p: p.stat().st_mtime_ns for p in (finished_run / "dataset").rglob("*")} == before
    fresh = run_cli("--push-to-hub", "me/evolved", "--save-path", str(tmp_path / "new"), env_extra=env)
    assert_one_line_error(fresh, "HF_TOKEN")
    assert not (tmp_path / "new").exists()


def test_hub_input_datasets_get_the_same_token(monkeypatch):
    from record_store.loading import load_table

    seen = {}

    def fake_load_dataset(name, **options):
        seen.update(options, name=name)
        return datasets.Dataset.from_dict({"instruction": ["x"]})

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MY_HF_TOKEN", HUB_TOKEN)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    load_table("someone/private-seeds", "train")
    assert seen == {"name": "someone/private-seeds", "split": "train", "token": HUB_TOKEN}


def test_the_card_publishes_no_local_path_and_no_endpoint_url(tmp_path):
    internal = "http://gpu-box.corp.internal:8000/v1"
    data = tmp_path / "private" / "customer_prompts.jsonl"
    data.parent.mkdir()
    shutil.copy(REPO / "data" / "sample_seed.jsonl", data)
    settings = make_settings(tmp_path / "secret-project", data_path=str(data), test_run=True, max_steps=0, loop=1,
                             evol_llm=fake_llm_config("evol", base_url=internal))
    run_workflow(settings, ScriptedChatModel())
    folder = Path(settings.save_path) / "dataset"
    for path in (folder / "README.md", folder / "run_settings.json"):
        text = path.read_text(encoding="utf-8")
        assert str(tmp_path) not in text and "private" not in text and "secret-project" not in text, path
        assert "gpu-box" not in text and "fake.invalid" not in text, path
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "customer_prompts.jsonl" in card and "SmolLM2-135M-Instruct" in card  # the base name and the model id
    assert "--data-path customer_prompts.jsonl" in card.split("```bash\n", 1)[1]
