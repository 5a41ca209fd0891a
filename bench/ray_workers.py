"""--workers 1 against --workers 2 on the simulated endpoint at high concurrency: wall time and CPU per call.

    python bench/ray_workers.py --rows 400 --concurrency 64 --latency 0.02

Each run is `run.py` in a subprocess (max-steps 0, loop 1) against tests/chat_server.py in
another. CPU is summed over the run's whole process tree (driver, and with --workers the Ray
processes it starts), read from /proc every 0.2 s, so Ray's start-up is part of its figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from run_bench import synthetic_data  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root` and every process below it, by pid."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    below = {root}
    changed = True
    while changed:
        grown = below | {pid for pid, parent in parents.items() if parent in below}
        changed, below = grown != below, grown
    return {pid: cpu[pid] for pid in below if pid in cpu}


def one_run(workers: int, data: Path, config: Path, out: Path) -> dict:
    command = [sys.executable, str(REPO / "run.py"), "--data-path", str(data), "--evol-llm-config", str(config),
               "--optim-llm-config", str(config), "--max-steps", "0", "--loop", "1", "--save-path", str(out),
               "--quiet", "--workers", str(workers)]
    started, seen = time.monotonic(), {}
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        seen.update(tree_cpu(process.pid))  # a process that ended keeps its last reading
        time.sleep(0.2)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"--workers {workers} failed: {process.stderr.read()[-2000:]}")
    usage = json.loads((out / "run.json").read_text())["token_usage"]
    requests = sum(role.get("requests", 0) for role in usage.values())
    cpu = sum(seen.values())
    return {"workers": workers, "wall_s": round(wall, 2), "requests": requests, "calls_per_s": round(requests / wall, 1),
            "cpu_s": round(cpu, 2), "cpu_ms_per_call": round(1000 * cpu / requests, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.02, help="the simulated endpoint's fixed latency, seconds")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_server.py"), "--median", str(args.latency),
                               "--sigma", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = server.stdout.readline().split()[-1]
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            data = synthetic_data(scratch / "seeds.jsonl", args.rows)
            config = scratch / "sim.yaml"
            config.write_text(f"name: simulated\nmodel: sim\nbase_url: {url}\nconcurrency: {args.concurrency}\n"
                              "max_retries: 1\ntimeout: 30\n")
            figures = [one_run(workers, data, config, scratch / f"w{workers}") for workers in (1, 2)]
    finally:
        server.terminate()
    for row in figures:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
