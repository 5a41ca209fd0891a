"""Issue 21: a run killed (kill -9) in the middle of a validation race resumes without repeating paid calls
and takes the same decision as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO
from llm_access.probe import PROBE_PROMPT

sys.path.insert(0, str(REPO / "bench"))

from selection import SKILL_TAG, WorldAnswers, WorldServer, World, world_data  # noqa: E402


class RecordingWorld(WorldAnswers):
    """The selection bench's world, recording every (prompt, seed) it answers; signals after n candidate evolutions."""

    def __init__(self, world: World, signal_after: int | None = None):
        super().__init__(world)
        self.asked: list[tuple[str, int | None]] = []
        self.candidate_evolutions = 0
        self.signal_after, self.reached = signal_after, threading.Event()

    def __call__(self, prompt, seed=None):
        with self.lock:
            self.asked.append((prompt, seed))
            if "#Instruction#\n" in prompt and SKILL_TAG in prompt.rsplit("#Instruction#\n", 1)[0]:
                self.candidate_evolutions += 1
                if self.signal_after is not None and self.candidate_evolutions >= self.signal_after:
                    self.reached.set()
        return super().__call__(prompt, seed)


def _command(work: Path, base_url: str) -> list[str]:
    config = work / "world.yaml"
    config.write_text(f"preset: openai\nbase_url: {base_url}\nmodel: world\napi_key_env: WORLD_KEY\nconcurrency: 1\n"
                      "max_tokens: 256\ntimeout: 60\nmax_retries: 2\ntemperature: 0.6\nseed: 0\n", encoding="utf-8")
    data = world_data(work / "data.jsonl", 80, seed=3)
    return [sys.executable, str(REPO / "run.py"), "--data-path", str(data), "--train-size", "20", "--dev-size", "60",
            "--batch-size", "4", "--candidate-size", "3", "--max-steps", "2", "--patience", "5", "--loop", "1",
            "--test-run", "--selection", "race", "--diversity", "none", "--evol-llm-config", str(config), "--optim-llm-config", str(config),
            "--save-path", str(work / "out"), "--quiet"]


def _serve(answers: RecordingWorld) -> WorldServer:
    return WorldServer(answers, latency=0.002)


def _decisions(out: Path) -> tuple[list, str]:
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return [(s["kept_method_id"], s["decision"]) for s in run["history"]], run["method"]


def _kill_point(out: Path, where: str) -> int:
    """Candidate evolutions before the kill: half way through step 1's heat, or half way through its later rounds."""
    from method_selection.race import race_rounds

    heat = race_rounds(60, 3)[0][0]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    items = [c["score"]["dev_size"] for c in run["history"][0]["candidates"] if c.get("score")]
    in_heat, later = sum(min(n, heat) for n in items), sum(max(0, n - heat) for n in items)
    assert later > 4, "the reference run's first step has no candidate past the heat"
    return in_heat // 2 if where == "heat" else in_heat + later // 2


@pytest.mark.parametrize("where", ["heat", "later round"])
def test_a_race_killed_mid_validation_resumes_without_repeating_calls_and_decides_the_same(tmp_path, where):
    env = {**os.environ, "WORLD_KEY": "world"}
    world = World(5)

    reference = RecordingWorld(world)
    server = _serve(reference)
    try:
        (tmp_path / "ref").mkdir()
        done = subprocess.run(_command(tmp_path / "ref", server.server.base_url), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]

    crashing = RecordingWorld(world, signal_after=_kill_point(tmp_path / "ref" / "out", where))
    server = _serve(crashing)
    try:
        (tmp_path / "crash").mkdir()
        command = _command(tmp_path / "crash", server.server.base_url)
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert crashing.reached.wait(300), "the run never reached its candidates' validation"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
        before_kill = list(crashing.asked)
        assert not (tmp_path / "crash" / "out" / "run.json").exists()  # killed mid-race, not after it
        crashing.asked.clear()
        resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        server.close()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the run" in resumed.stderr

    assert _decisions(tmp_path / "crash" / "out") == _decisions(tmp_path / "ref" / "out")
    # At most the one request in flight at the kill (concurrency 1) is asked again: every answer received is kept.
    # Each invocation probes the endpoint once before it spends anything: that request is no answer lost.
    work = [asked for asked in crashing.asked if asked[0] != PROBE_PROMPT]
    repeated = set(before_kill) & set(work)
    assert len(repeated) <= 1, len(repeated)
    assert len(before_kill) + len(work) <= len(reference.asked) + 1
