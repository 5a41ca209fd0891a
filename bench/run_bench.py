"""Benchmarks: pipeline overhead with an instant model, saturation of the embedded server, and a peer.

    python bench/run_bench.py                    # everything, default sizes
    python bench/run_bench.py --sizes 200 --saturation-tasks 4 --peer none   # quick

Prints a table and writes the same figures to bench/results.json. Each comparison is
measured in one run, as a ratio, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH), str(REPO / "tests")]

WORDS = ("river market winter engine garden theory signal harbor violin copper orbit ledger meadow "
         "canyon pixel sonnet glacier tariff compass lantern quartz mosaic thunder orchard voltage").split()


def synthetic_data(path: Path, rows: int, seed: int = 0) -> Path:
    """Distinct instructions (random words), so near-duplicate removal keeps them."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            words = " ".join(rng.choice(WORDS) for _ in range(10))
            handle.write(json.dumps({"id": f"s{i}", "instruction": f"Task {i}: explain {words}."}) + "\n")
    return path


def overhead(rows: int) -> dict:
    """Run the overhead measurement in a fresh process, so peak RSS belongs to this size alone."""
    result = subprocess.run([sys.executable, str(BENCH / "overhead_child.py"), str(rows)], capture_output=True,
                            text=True, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="instruction counts for the overhead runs")
    parser.add_argument("--saturation-tasks", type=int, default=40, help="instructions for the saturation run")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight, same on both sides")
    parser.add_argument("--peer", choices=("distilabel", "gather", "none"), default="distilabel",
                        help="what to compare our generation against (distilabel falls back to gather)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds on the server; each side reports its fastest")
    parser.add_argument("--json", default=str(BENCH / "results.json"), help="where to write the figures")
    args = parser.parse_args()

    from saturation import measure_on_server

    figures: dict = {"overhead": [overhead(int(n)) for n in args.sizes.split(",")]}
    if args.saturation_tasks:
        figures.update(measure_on_server(args.saturation_tasks, args.concurrency, args.peer, args.rounds))
    Path(args.json).write_text(json.dumps(figures, indent=2))
    print(format_table(figures))
    return 0


def format_table(figures: dict) -> str:
    lines = ["overhead (instant in-process model, loop 3, 1 optimization step)",
             f"{'rows':>7} {'LLM calls':>10} {'wall s':>8} {'CPU ms/call':>12} {'peak RSS MB':>12}"]
    for row in figures["overhead"]:
        lines.append(f"{row['rows']:>7} {row['calls']:>10} {row['wall_s']:>8.1f} {row['cpu_ms_per_call']:>12.3f} "
                     f"{row['peak_rss_mb']:>12.1f}")
    sizes = figures["overhead"]
    if len(sizes) > 1:
        lines.append(f"peak RSS growth {sizes[0]['rows']} -> {sizes[-1]['rows']} rows: "
                     f"{sizes[-1]['peak_rss_mb'] - sizes[0]['peak_rss_mb']:.1f} MB (target <= 50)")
    if "saturation" in figures:
        s = figures["saturation"]
        lines.append(f"saturation on the embedded server, concurrency {s['concurrency']}, {s['tasks']} instructions: "
                     f"pipeline {s['pipeline_tokens_per_s']:.1f} tok/s, bare client {s['bare_tokens_per_s']:.1f} tok/s, "
                     f"ratio {s['ratio']:.2f} (target >= 0.9); endpoint busy {100 * s['endpoint_busy']:.1f}% of "
                     f"the pipeline's wall time (fastest of {s['rounds']} rounds)")
    if "peer" in figures:
        p = figures["peer"]
        lines.append(f"evolve once + answer, {p['tasks']} instructions, concurrency {p['concurrency']}: ours "
                     f"{p['ours_s']:.1f} s ({p['ours_tokens_per_s']:.1f} tok/s), {p['peer']} {p['peer_s']:.1f} s "
                     f"({p['peer_tokens_per_s']:.1f} tok/s), wall-time ratio ours/peer {p['ratio']:.2f} (target < 1)"
                     + (f" ({p['note']})" if p.get("note") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
