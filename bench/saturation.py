"""Saturation and peer comparison against the real embedded server, measured in one run.

Both sides do the same work on the same prompts at the same concurrency: evolve each
instruction once with e0, then answer the evolved instruction.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from configuration import RunSettings, load_llm_config
from local_server import embedded_server
from parsing import parse_evolved_instruction
from run import execute, prepare_directory
from tasks import fill, initial_method

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _instructions(count: int) -> list[str]:
    rows = [json.loads(line)["instruction"] for line in (REPO / "data" / "sample_seed.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def _greedy(concurrency: int):
    return load_llm_config("local", "evol").model_copy(update={"temperature": 0.0, "concurrency": concurrency})


async def _bare_client(base_url: str, instructions: list[str], concurrency: int) -> tuple[float, int]:
    """The same two calls per instruction with a plain AsyncOpenAI client: the ceiling."""
    from openai import AsyncOpenAI

    config = _greedy(concurrency)
    client, slots = AsyncOpenAI(base_url=base_url, api_key="none"), asyncio.Semaphore(concurrency)

    async def ask(prompt: str) -> tuple[str, int]:
        async with slots:
            reply = await client.chat.completions.create(
                model=config.model, messages=[{"role": "user", "content": prompt}], temperature=0.0,
                top_p=config.top_p, seed=config.seed, extra_body={"max_tokens": config.max_tokens})
        return reply.choices[0].message.content or "", reply.usage.completion_tokens

    async def one(instruction: str) -> int:
        text, evolved_tokens = await ask(fill("evolve", method=initial_method(), instruction=instruction))
        evolved = parse_evolved_instruction(text, "lenient").text or instruction
        _, answer_tokens = await ask(fill("respond", instruction=evolved))
        return evolved_tokens + answer_tokens

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in instructions)))
    return time.perf_counter() - started, tokens


def _pipeline(base_url: str, instructions: list[str], concurrency: int) -> tuple[float, int]:
    """Our generation subgraph, one level, no optimization, no diversity step."""
    work = Path(tempfile.mkdtemp(prefix="autoevol-saturation-"))
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{n}", "instruction": t}, ensure_ascii=False) + "\n"
                            for n, t in enumerate(instructions)), encoding="utf-8")
    settings = RunSettings(data_path=str(data), save_path=str(work / "run"), evol_llm=_greedy(concurrency),
                           optim_llm=_greedy(concurrency), max_steps=0, loop=1, diversity=["none"],
                           batch_size=max(1, len(instructions) // max(1, concurrency)))
    prepare_directory(settings, overwrite=True)
    started = time.perf_counter()
    asyncio.run(execute(settings, embedded_url=base_url, quiet=True))
    wall = time.perf_counter() - started
    usage = json.loads((work / "run" / "run.json").read_text())["token_usage"]
    return wall, sum(u["output_tokens"] for u in usage.values())


def measure_saturation(tasks: int, concurrency: int) -> dict:
    instructions = _instructions(tasks)
    with embedded_server() as server:
        bare_wall, bare_tokens = asyncio.run(_bare_client(server.base_url, instructions, concurrency))
        ours_wall, ours_tokens = _pipeline(server.base_url, instructions, concurrency)
    ours, bare = ours_tokens / ours_wall, bare_tokens / bare_wall
    return {"tasks": tasks, "concurrency": concurrency, "pipeline_tokens_per_s": round(ours, 1),
            "bare_tokens_per_s": round(bare, 1), "ratio": round(ours / bare, 3),
            "pipeline": {"wall_s": round(ours_wall, 1), "tokens": ours_tokens},
            "bare": {"wall_s": round(bare_wall, 1), "tokens": bare_tokens}}


def compare_with_peer(tasks: int, concurrency: int, peer: str) -> dict:
    """Wall time of the same work: ours against distilabel's EvolInstruct (or a gather baseline)."""
    instructions = _instructions(tasks)
    note = ""
    with embedded_server() as server:
        ours_wall, _ = _pipeline(server.base_url, instructions, concurrency)
        peer_wall = None
        if peer == "distilabel":
            peer_wall, note = _distilabel(server.base_url, instructions, concurrency)
        if peer_wall is None:
            peer, (peer_wall, _) = "asyncio.gather baseline", asyncio.run(
                _bare_client(server.base_url, instructions, concurrency))
    return {"tasks": tasks, "concurrency": concurrency, "peer": peer, "ours_s": round(ours_wall, 1),
            "peer_s": round(peer_wall, 1), "ratio": round(ours_wall / peer_wall, 3), "note": note}


def _distilabel(base_url: str, instructions: list[str], concurrency: int) -> tuple[float | None, str]:
    """Run bench/distilabel_peer.py in distilabel's own venv; (None, why) when it cannot run."""
    python = Path(sys.prefix).parent / "venv-distilabel" / "bin" / "python"
    for candidate in (BENCH / ".venv-distilabel" / "bin" / "python", Path("/tmp/venv-distilabel/bin/python"), python):
        if candidate.exists():
            python = candidate
            break
    else:
        return None, "distilabel venv not found: run bench/setup_distilabel.sh"
    payload = json.dumps({"base_url": base_url, "instructions": instructions, "concurrency": concurrency,
                          "max_tokens": _greedy(concurrency).max_tokens, "model": _greedy(concurrency).model})
    result = subprocess.run([str(python), str(BENCH / "distilabel_peer.py")], input=payload, capture_output=True,
                            text=True, timeout=3600)
    if result.returncode != 0:
        return None, f"distilabel failed: {result.stderr.strip().splitlines()[-1][:200] if result.stderr else '?'}"
    return json.loads(result.stdout.strip().splitlines()[-1])["wall_s"], ""
