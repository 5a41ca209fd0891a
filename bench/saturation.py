"""Saturation and peer comparison against the real embedded server, measured in one run.

The work is one generation level: evolve each instruction once with e0, then answer it.
Saturation replays the exact request bodies our pipeline sent through a bare httpx client,
so both sides do identical work. The peer gets the same instructions and our e0 prompt,
but decides on its own what to retry and what to answer, so tokens are reported too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import httpx

import llm_access.client
from settings import RunSettings
from llm_access.config import load_llm_config
from llm_access.embedded_server import embedded_server
from failure_checks.markers import parse_evolved_instruction
from run import execute, prepare_directory
from llm_tasks.templates import fill, initial_method

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _instructions(count: int) -> list[str]:
    rows = [json.loads(line)["instruction"] for line in (REPO / "data" / "sample_seed.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def _greedy(concurrency: int):
    return load_llm_config("local", "evol").model_copy(update={"temperature": 0.0, "concurrency": concurrency})


async def _bare_client(base_url: str, instructions: list[str], concurrency: int) -> tuple[float, int]:
    """Evolve with e0 and answer, written plainly with AsyncOpenAI and asyncio.gather."""
    from openai import AsyncOpenAI

    config = _greedy(concurrency)
    slots = asyncio.Semaphore(concurrency)

    async def ask(client: AsyncOpenAI, prompt: str) -> tuple[str, int]:
        async with slots:
            reply = await client.chat.completions.create(
                model=config.model, messages=[{"role": "user", "content": prompt}], temperature=0.0,
                top_p=config.top_p, seed=config.seed, extra_body={"max_tokens": config.max_tokens})
        return reply.choices[0].message.content or "", reply.usage.completion_tokens

    async def one(client: AsyncOpenAI, instruction: str) -> int:
        text, evolved_tokens = await ask(client, fill("evolve", method=initial_method(), instruction=instruction))
        evolved = parse_evolved_instruction(text, "lenient").text or instruction
        _, answer_tokens = await ask(client, fill("respond", instruction=evolved))
        return evolved_tokens + answer_tokens

    started = time.perf_counter()
    async with AsyncOpenAI(base_url=base_url, api_key="none") as client:
        tokens = sum(await asyncio.gather(*(one(client, i) for i in instructions)))
    return time.perf_counter() - started, tokens


class _RecordingClient(httpx.AsyncClient):
    """The pipeline's HTTP client: keeps each chat request body, so the bare client can replay
    it, and the time a request was in flight, so we know how busy the endpoint was kept."""

    bodies: list[bytes] = []
    busy_s = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, event_hooks={"request": [self._sent], "response": [self._answered]}, **kwargs)
        self._in_flight, self._busy_since = 0, 0.0

    async def _sent(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            _RecordingClient.bodies.append(request.content)
            request.extensions["autoevol_timed"] = True
            if self._in_flight == 0:
                self._busy_since = time.perf_counter()
            self._in_flight += 1

    async def _answered(self, response: httpx.Response) -> None:
        if response.request.extensions.get("autoevol_timed"):
            self._in_flight -= 1
            if self._in_flight == 0:
                _RecordingClient.busy_s += time.perf_counter() - self._busy_since


def _pipeline(base_url: str, instructions: list[str], concurrency: int) -> dict:
    """Our generation subgraph, one level, no optimization, no diversity step.

    Returns wall seconds, completion tokens, the seconds the endpoint had a request of ours in
    flight, and the request bodies it sent."""
    work = Path(tempfile.mkdtemp(prefix="autoevol-saturation-"))
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{n}", "instruction": t}, ensure_ascii=False) + "\n"
                            for n, t in enumerate(instructions)), encoding="utf-8")
    settings = RunSettings(data_path=str(data), save_path=str(work / "run"), evol_llm=_greedy(concurrency),
                           optim_llm=_greedy(concurrency), max_steps=0, loop=1, diversity=["none"],
                           batch_size=max(1, len(instructions) // max(1, concurrency)))
    prepare_directory(settings, overwrite=True)
    _RecordingClient.bodies, _RecordingClient.busy_s = [], 0.0
    with mock.patch.object(llm_access.client.httpx, "AsyncClient", _RecordingClient):
        started = time.perf_counter()
        asyncio.run(execute(settings, embedded_url=base_url, quiet=True))
        wall = time.perf_counter() - started
    usage = json.loads((work / "run" / "run.json").read_text())["token_usage"]
    shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": wall, "tokens": sum(u["output_tokens"] for u in usage.values()),
            "busy_s": _RecordingClient.busy_s, "bodies": _RecordingClient.bodies}


async def _replay(base_url: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    """Send the recorded bodies again with a bare httpx client, in order, at the same concurrency."""
    slots = asyncio.Semaphore(concurrency)

    async def send(client: httpx.AsyncClient, body: bytes) -> int:
        async with slots:
            reply = await client.post("chat/completions", content=body, headers={"Content-Type": "application/json"})
        return reply.raise_for_status().json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=600) as client:
        tokens = sum(await asyncio.gather(*(send(client, body) for body in bodies)))
    return time.perf_counter() - started, tokens


def measure_on_server(tasks: int, concurrency: int, peer: str, rounds: int) -> dict:
    """Saturation and the peer comparison on one embedded server, in alternating rounds.

    Other work on a 2-core machine slows single requests down several-fold at random, and
    the noise only ever adds time, so each side's figure is its fastest round."""
    instructions = _instructions(tasks)
    ours, bare, peers, note = [], [], [], ""
    with embedded_server() as server:
        # One untimed request, so no side pays for the model's first pass.
        asyncio.run(_bare_client(server.base_url, instructions[:1], concurrency))
        for _ in range(rounds):
            ours.append(_pipeline(server.base_url, instructions, concurrency))
            bare.append(asyncio.run(_replay(server.base_url, ours[-1]["bodies"], concurrency)))
            if peer == "distilabel":
                figures, note = _distilabel(server.base_url, instructions, concurrency)
                peers += [figures] if figures else []
                peer = peer if figures else "gather"
            if peer == "gather":
                peers.append(asyncio.run(_bare_client(server.base_url, instructions, concurrency)))
    best = min(ours, key=lambda run: run["wall_s"])
    bare_wall, bare_tokens = min(bare)
    peer_wall, peer_tokens = min(peers) if peers else (float("nan"), 0)
    figures = {"tasks": tasks, "concurrency": concurrency, "rounds": rounds, "requests": len(best["bodies"])}
    saturation = {**figures, "pipeline_tokens_per_s": round(best["tokens"] / best["wall_s"], 1),
                  "bare_tokens_per_s": round(bare_tokens / bare_wall, 1),
                  "ratio": round(best["tokens"] / best["wall_s"] / (bare_tokens / bare_wall), 3),
                  "endpoint_busy": round(best["busy_s"] / best["wall_s"], 3),
                  "pipeline": {"wall_s": round(best["wall_s"], 1), "tokens": best["tokens"],
                               "all_walls_s": [round(run["wall_s"], 1) for run in ours]},
                  "bare": {"wall_s": round(bare_wall, 1), "tokens": bare_tokens,
                           "all_walls_s": [round(wall, 1) for wall, _ in bare]}}
    label = "distilabel EvolInstruct" if peer == "distilabel" else "asyncio.gather baseline"
    comparison = {**figures, "peer": label, "ours_s": round(best["wall_s"], 1), "peer_s": round(peer_wall, 1),
                  "ratio": round(best["wall_s"] / peer_wall, 3), "ours_tokens": best["tokens"],
                  "peer_tokens": peer_tokens, "ours_tokens_per_s": saturation["pipeline_tokens_per_s"],
                  "peer_tokens_per_s": round(peer_tokens / peer_wall, 1),
                  "peer_all_walls_s": [round(wall, 1) for wall, _ in peers], "note": note}
    return {"saturation": saturation, **({"peer": comparison} if peer != "none" else {})}


def _distilabel_python() -> Path:
    """distilabel's own venv, made by setup_distilabel.sh the first time it is needed."""
    python = Path(os.environ.get("AUTOEVOL_DISTILABEL_PYTHON", BENCH / ".venv-distilabel" / "bin" / "python"))
    if not python.exists():
        print("installing distilabel into bench/.venv-distilabel (once)", file=sys.stderr, flush=True)
        subprocess.run(["bash", str(BENCH / "setup_distilabel.sh")], check=False)
    return python


def _distilabel(base_url: str, instructions: list[str], concurrency: int) -> tuple[tuple[float, int] | None, str]:
    """Run bench/distilabel_peer.py in distilabel's own venv: ((wall, tokens), "") or (None, why)."""
    python = _distilabel_python()
    if not python.exists():
        return None, "distilabel could not be installed: see bench/setup_distilabel.sh's output"
    config = _greedy(concurrency)
    payload = json.dumps({"base_url": base_url, "instructions": instructions, "concurrency": concurrency,
                          "max_tokens": config.max_tokens, "top_p": config.top_p, "model": config.model,
                          "evolve_template": fill("evolve", method=initial_method(), instruction="<PROMPT>")})
    result = subprocess.run([str(python), str(BENCH / "distilabel_peer.py")], input=payload, capture_output=True,
                            text=True, timeout=3600)
    if result.returncode != 0:
        return None, f"distilabel failed: {result.stderr.strip().splitlines()[-1][:200] if result.stderr else '?'}"
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return (figures["wall_s"], figures["output_tokens"]), ""
