"""Throughput against a simulated API: how busy our client keeps an endpoint with a long latency tail.

The endpoint (tests/chat_server.py, its own process) answers with lognormal latency and
measures at the server the mean number of requests in flight. For each case the run is
`run.py --max-steps 0 --loop L` with dedup on, as a user would start it.

    python bench/throughput.py --cases 64:2000 --median 1                    # the headline case
    python bench/throughput.py --cases 16:2000,64:2000,256:2000,64:10000 --calls-per-second 150
    python bench/throughput.py --cases 64:2000 --before ../before            # an older checkout, same case
    python bench/throughput.py --cases 64:2000 --capacity 32                 # a server that 429s above 32

Figures: utilization = mean in flight / concurrency (at the server); wall / ideal, where
ideal = sum of latencies / concurrency; CPU per request and peak RSS of the client process.
With --calls-per-second the median latency is scaled per concurrency so that a fully busy
client makes that many calls per second (utilization does not depend on the time scale, and
this keeps the client's CPU out of the way); otherwise --median is used as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from run_bench import synthetic_data  # noqa: E402


class SimulatedEndpoint:
    """tests/chat_server.py in its own process, so its CPU is not the client's."""

    def __init__(self, median: float, sigma: float, capacity: int | None, retry_after: str):
        command = [sys.executable, str(REPO / "tests" / "chat_server.py"), "--median", str(median), "--sigma", str(sigma),
                   "--retry-after", retry_after] + (["--capacity", str(capacity)] if capacity else [])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().split()[-1]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats", timeout=30) as reply:
            return json.loads(reply.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_client(repo: Path, work: Path, base_url: str, concurrency: int, rows: int, loop: int) -> dict:
    """Our run.py in a child process; returns its wall time, CPU and peak RSS (from wait4)."""
    config = work / "simulated.yaml"
    config.write_text(f"preset: openai\nbase_url: {base_url}\nmodel: simulated\napi_key_env: SIMULATED_API_KEY\n"
                      f"concurrency: {concurrency}\nmax_tokens: 256\ntimeout: 600\nmax_retries: 5\ntemperature: 0\n")
    data = synthetic_data(work / f"data-{rows}.jsonl", rows)
    command = [sys.executable, str(repo / "run.py"), "--data-path", str(data), "--max-steps", "0", "--loop", str(loop),
               "--evol-llm-config", str(config), "--save-path", str(work / "out"), "--quiet", "--overwrite"]
    env = {**os.environ, "SIMULATED_API_KEY": "simulated", "PYTHONPATH": str(repo)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the run failed: {process.stderr.read()[-2000:]}")
    run = json.loads((work / "out" / "run.json").read_text())
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "records": sum(run["counts"]["records_per_level"].values()),
            "accounting_holds": run["counts"]["accounting_holds"]}


def run_distilabel(work: Path, base_url: str, concurrency: int, rows: int) -> dict:
    """distilabel's EvolInstruct (evolve once, answer) in its own venv, our e0 prompt as its mutation."""
    from llm_tasks.templates import fill, initial_method
    from saturation import _distilabel_python

    instructions = [json.loads(line)["instruction"]
                    for line in synthetic_data(work / f"data-{rows}.jsonl", rows).read_text().splitlines()]
    job = json.dumps({"base_url": base_url, "instructions": instructions, "concurrency": concurrency,
                      "max_tokens": 256, "top_p": 0.95, "model": "simulated",
                      "evolve_template": fill("evolve", method=initial_method(), instruction="<PROMPT>")})
    started = time.perf_counter()
    process = subprocess.Popen([str(_distilabel_python()), str(BENCH / "distilabel_peer.py")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OPENAI_API_KEY": "x"})
    out, err = process.communicate(job, timeout=7200)
    if process.returncode != 0:
        raise SystemExit(f"distilabel failed: {err[-2000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": round(time.perf_counter() - started, 1), "cpu_s": None, "peak_rss_mb": None,
            "records": figures["rows"], "accounting_holds": None}


def measure(repo: Path | None, concurrency: int, rows: int, loop: int, median: float, sigma: float,
            capacity: int | None, retry_after: str) -> dict:
    """One case against a fresh endpoint; `repo` None runs distilabel instead of a checkout of ours."""
    endpoint = SimulatedEndpoint(median, sigma, capacity, retry_after)
    try:
        with tempfile.TemporaryDirectory(prefix="autoevol-throughput-") as work:
            if repo is None:
                client = run_distilabel(Path(work), endpoint.base_url, concurrency, rows)
            else:
                client = run_client(repo, Path(work), endpoint.base_url, concurrency, rows, loop)
        server = endpoint.stats()
    finally:
        endpoint.close()
    slots = min(concurrency, capacity or concurrency)
    ideal = server["latency_sum_s"] / slots
    return {"concurrency": concurrency, "rows": rows, "loop": loop, "median_s": round(median, 4), "sigma": sigma,
            "capacity": capacity, **client, **server,
            "utilization": round(server["mean_in_flight"] / slots, 3),
            "wall_over_ideal": round(server["span_s"] / ideal, 2) if ideal else None,
            "rows_per_s": round(rows / server["span_s"], 2) if server["span_s"] else None,
            "cpu_ms_per_request": round(1000 * client["cpu_s"] / max(1, server["served"]), 3) if client["cpu_s"] else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="64:2000", help="concurrency:rows pairs, comma-separated")
    parser.add_argument("--loop", type=int, default=2)
    parser.add_argument("--median", type=float, default=1.0, help="median latency in seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape")
    parser.add_argument("--calls-per-second", type=float, default=None,
                        help="scale the median per concurrency so a fully busy client makes this many calls/s")
    parser.add_argument("--capacity", type=int, default=None, help="the server answers 429 above this many in flight")
    parser.add_argument("--retry-after", default="1", help="Retry-After of the server's 429s, in seconds")
    parser.add_argument("--before", default=None, help="also run an older checkout of this repo on every case")
    parser.add_argument("--peer", choices=("none", "distilabel"), default="none",
                        help="also run distilabel's EvolInstruct (evolve once, answer) on every case; compare with --loop 1")
    parser.add_argument("--json", default=None, help="append the figures to this JSON-lines file")
    args = parser.parse_args()

    for case in args.cases.split(","):
        concurrency, rows = (int(part) for part in case.split(":"))
        median = args.median
        if args.calls_per_second:  # mean latency of a lognormal is median * exp(sigma^2 / 2)
            median = concurrency / args.calls_per_second / math.exp(args.sigma ** 2 / 2)
        sides = [("ours", REPO)] + ([("before", Path(args.before).resolve())] if args.before else []) + \
            ([("distilabel", None)] if args.peer == "distilabel" else [])
        for label, repo in sides:
            figures = {"side": label, **measure(repo, concurrency, rows, args.loop, median, args.sigma, args.capacity,
                                                args.retry_after)}
            print(format_row(figures), flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(figures) + "\n")
    return 0


def format_row(f: dict) -> str:
    capacity = f" capacity {f['capacity']}" if f["capacity"] else ""
    cpu = f"CPU {f['cpu_ms_per_request']:.2f} ms/request, peak RSS {f['peak_rss_mb']:.0f} MB, " if f["cpu_s"] else ""
    return (f"{f['side']:>10} c={f['concurrency']:<4} rows={f['rows']:<6} loop={f['loop']} median={f['median_s']}s{capacity}: "
            f"utilization {f['utilization']:.3f}, wall/ideal {f['wall_over_ideal']}, span {f['span_s']:.0f}s, "
            f"rows/s {f['rows_per_s']}, served {f['served']}, 429s {f['throttled']}, {cpu}"
            f"records {f['records']}, accounting {f['accounting_holds']}")


if __name__ == "__main__":
    sys.exit(main())
