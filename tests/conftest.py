"""Shared fixtures: a fake-model world for unit tests, the real embedded server for integration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from settings import RunSettings

from llm_access.config import load_llm_config

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"


def shared_data(name: str) -> Path:
    """A seed file of the workspace's shared data; the test skips, naming it, where a clone has none."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"needs {path}, the workspace's shared seed data, which this checkout does not have")
    return path


@pytest.fixture(scope="session")
def embedded():
    """The real embedded llama.cpp server, started once for the integration tests."""
    from llm_access.embedded_server import embedded_server

    with embedded_server() as server:
        yield server


@pytest.fixture(scope="session")
def simulated_endpoint():
    """The base URL (…/v1) of tests/chat_server.py in its own process: fast answers shaped to pass the rules."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_server.py"), "--median", "0.001",
                                "--sigma", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        yield line.split()[1]
    finally:
        process.kill()
        process.wait()


def fake_llm_config(role: str = "evol", **changes):
    """The local preset pointed at nowhere: the fake model answers instead."""
    config = load_llm_config("local", role)
    return config.model_copy(update={"embedded": False, "base_url": "http://fake.invalid/v1", "concurrency": 4,
                                     **changes})


def make_settings(tmp_path: Path, **fields) -> RunSettings:
    base = dict(data_path=str(REPO / "data" / "sample_seed.jsonl"), save_path=str(tmp_path / "out"),
                evol_llm=fake_llm_config("evol"), optim_llm=fake_llm_config("optim"))
    return RunSettings(**{**base, **fields})


def run_workflow(settings: RunSettings, model, optim_model=None, **options) -> dict:
    """Run the whole graph with fake models; returns the final state values."""
    from run import execute, prepare_directory

    prepare_directory(settings, overwrite=False)
    return asyncio.run(execute(settings, models={"evol": model, "optim": optim_model or model}, quiet=True, **options))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (a start costs seconds): 2 CPUs, no dashboard, stopped at the end."""
    ray = pytest.importorskip("ray")
    from ray_backend.workers import runtime_env

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False)
    yield ray
    ray.shutdown()
