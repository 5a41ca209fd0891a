"""Issue 12, step 4: each candidate goes analyze -> optimize -> validate on its own, with no wave barrier."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import openai
import pytest

from conftest import make_settings, run_workflow
from fakes import ScriptedChatModel, default_responder, method_of, task_of
from llm_access.client import FatalLLMError
from run_report.progress import ProgressDisplay

WAIT = 30  # seconds; only reached when a branch is held back by another, i.e. when the test fails


def sample_of(seed: int) -> int:
    """The sample index a request's seed stands for (the client sends seed + 1000 * sample index + attempt)."""
    return seed // 1000


def watch_updates(monkeypatch, seen) -> None:
    """Call `seen(namespace, node, values)` for every node update run.py's progress display receives."""
    original = ProgressDisplay.handle

    def handle(self, chunk):
        namespace, mode, data = chunk
        if mode == "updates":
            for node, values in (data or {}).items():
                seen(namespace, node, values)
        original(self, chunk)

    monkeypatch.setattr(ProgressDisplay, "handle", handle)


def test_a_slow_analysis_holds_only_its_own_candidate(tmp_path, monkeypatch):
    validated: dict[str, threading.Event] = {m: threading.Event() for m in ("s1c0", "s1c1")}
    order: list[str] = []
    waited = {}

    def seen(namespace, node, values):
        if node == "validator":
            method_id = values["scores"][0]["method_id"]
            if method_id in validated:
                validated[method_id].set()
            order.append(f"validated {method_id}")
        elif node == "analyzer":
            order.append(f"analysed {values['feedback'][0]['sample_index']}")

    def responder(prompt, seed):
        if task_of(prompt) == "analyze" and sample_of(seed) == 1:
            # Sample 1's analysis hangs until candidate 0 has been scored on the whole dev set.
            waited["released"] = validated["s1c0"].wait(timeout=WAIT)
        return default_responder(prompt, seed)

    watch_updates(monkeypatch, seen)
    model = ScriptedChatModel(responder=responder)
    values = run_workflow(make_settings(tmp_path, max_steps=1, candidate_size=2, dev_size=4, selection="full"), model)

    # With a barrier after the analyses, candidate 0 could not be validated before analysis 1 returned.
    assert waited["released"] is True
    assert order.index("validated s1c0") < order.index("analysed 1") < order.index("validated s1c1")
    step = values["history"][0]
    assert [c["method_id"] for c in step["candidates"]] == ["s1c0", "s1c1"]
    assert all(c["score"]["dev_size"] == 4 for c in step["candidates"])
    assert [f["sample_index"] for f in step["feedback"]] == [0, 1]


def test_the_incumbent_is_validated_beside_the_candidates_not_after_them(tmp_path, monkeypatch):
    incumbent_done = threading.Event()
    waited = {}

    def seen(namespace, node, values):
        if node == "validator" and values["scores"][0]["method_id"] == "e0":
            incumbent_done.set()

    def responder(prompt, seed):
        if task_of(prompt) == "optimize":
            waited.setdefault("released", []).append(incumbent_done.wait(timeout=WAIT))
        return default_responder(prompt, seed)

    watch_updates(monkeypatch, seen)
    values = run_workflow(make_settings(tmp_path, max_steps=1, candidate_size=2, dev_size=4, selection="full"),
                          ScriptedChatModel(responder=responder))
    # Before, the incumbent was validated after the last optimizer: these waits would have timed out.
    assert waited["released"] == [True, True]
    step = values["history"][0]
    assert step["incumbent"]["method_id"] == "e0" and step["incumbent"]["score"]["dev_size"] == 4
    assert [c["score"]["dev_size"] for c in step["candidates"]] == [4, 4]


def _rejected_second_sample(prompt, seed):
    if task_of(prompt) == "optimize" and sample_of(seed) == 1:
        return "I rewrote it.\n```Optimized Method\nBe brief.\n```"
    return default_responder(prompt, seed)


def test_progress_names_every_candidate_from_inside_its_branch(tmp_path, capsys):
    from run import execute, prepare_directory

    settings = make_settings(tmp_path, max_steps=1, candidate_size=3, dev_size=4, loop=1, test_run=True)
    prepare_directory(settings, overwrite=False)
    model = ScriptedChatModel(responder=_rejected_second_sample)
    asyncio.run(execute(settings, models={"evol": model, "optim": model}, quiet=False))
    # tqdm moves the cursor around its bars: drop its escape codes to read the lines as a user does.
    lines = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", capsys.readouterr().err))
    for method_id in ("e0", "s1c0", "s1c2"):
        assert any(line.startswith(f"  {method_id}: dev failure rate 0.000") for line in lines), method_id
    assert "  s1c1: not validated, rejected (too_short)" in lines
    assert any(line.startswith("step 1: kept e0: ") for line in lines)


class CrashWhenOthersAreDone:
    """The default world, but the optimizer of sample 2 waits for every other branch to be saved, then gets a 401."""

    def __init__(self):
        self.others_saved = threading.Event()
        self.saved: set[str] = set()
        self.waited = None

    def seen(self, namespace, node, values):
        if namespace == () and node in ("candidate", "validator"):  # a finished branch of the workflow itself
            self.saved.update(s["method_id"] for s in values["scores"])
            if self.saved >= {"e0", "s1c0", "s1c1"}:
                self.others_saved.set()

    def __call__(self, prompt, seed):
        if task_of(prompt) == "optimize" and sample_of(seed) == 2:
            self.waited = self.others_saved.wait(timeout=WAIT)
            request = httpx.Request("POST", "http://fake/v1/chat/completions")
            raise openai.AuthenticationError("key revoked", response=httpx.Response(401, request=request), body=None)
        return default_responder(prompt, seed)


def _evolve_calls_by_method(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in model.calls:
        if call["task"] == "evolve":
            variant = re.search(r"Variant (\d+):", method_of(call["prompt"]))
            name = f"Variant {sample_of(int(variant.group(1)))}" if variant else "e0"
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_a_crash_in_one_branch_resumes_without_redoing_the_finished_ones(tmp_path, monkeypatch):
    fields = dict(max_steps=1, candidate_size=3, dev_size=4, batch_size=2, loop=1, test_run=True, selection="full")
    reference = ScriptedChatModel()
    expected = run_workflow(make_settings(tmp_path / "ref", **fields), reference)

    settings = make_settings(tmp_path / "crash", **fields)
    crash = CrashWhenOthersAreDone()
    watch_updates(monkeypatch, crash.seen)
    with pytest.raises(FatalLLMError):
        run_workflow(settings, ScriptedChatModel(responder=crash))
    assert crash.waited is True

    # A fresh answer cache: whatever is not asked again was kept by the checkpoints, not the cache.
    resumed = ScriptedChatModel()
    values = run_workflow(settings, resumed, cache=str(tmp_path / "fresh_cache.sqlite"))
    asked = [(c["task"], sample_of(c["seed"])) for c in resumed.calls if c["task"] in ("analyze", "optimize")]
    assert asked == [("optimize", 2)]
    evolved, expected_evolved = _evolve_calls_by_method(resumed), _evolve_calls_by_method(reference)
    assert "Variant 0" not in evolved and "Variant 1" not in evolved and evolved["Variant 2"] == 4
    # e0's trajectories (2 cases x 1 round) and its dev score (4 cases) are not redone: only generation is left.
    assert evolved["e0"] == expected_evolved["e0"] - 2 - 4
    assert values["history"] == expected["history"]
