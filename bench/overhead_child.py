"""One overhead measurement: the full pipeline on N synthetic rows with an instant model; prints JSON."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH), str(BENCH.parent / "tests")]

from settings import RunSettings

from llm_access.config import load_llm_config  # noqa: E402
from instant_model import InstantChatModel  # noqa: E402
from run import execute, prepare_directory  # noqa: E402
from run_bench import synthetic_data  # noqa: E402


def main(rows: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"autoevol-bench-{rows}-"))
    llm = load_llm_config("local", "evol").model_copy(
        update={"embedded": False, "base_url": "http://instant.invalid/v1", "concurrency": 16, "parse_mode": "strict"})
    settings = RunSettings(data_path=str(synthetic_data(work / "data.jsonl", rows)), save_path=str(work / "run"),
                           evol_llm=llm, optim_llm=llm, loop=3, max_steps=1, candidate_size=2, batch_size=4,
                           train_size=4, dev_size=4)
    prepare_directory(settings, overwrite=True)
    model = InstantChatModel()
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(execute(settings, models={"evol": model, "optim": model}, quiet=True))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    run = json.loads((work / "run" / "run.json").read_text())
    calls = sum(u["calls"] for u in run["token_usage"].values())
    return {"rows": rows, "calls": calls, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cpu_ms_per_call": round(1000 * cpu / calls, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "accounting_holds": run["counts"]["accounting_holds"]}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
