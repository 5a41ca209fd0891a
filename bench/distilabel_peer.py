"""The peer side of the benchmark, run inside distilabel's own venv (not a project dependency).

Reads {"base_url", "instructions", "concurrency", "max_tokens", "model"} as JSON on stdin;
evolves each instruction once with distilabel's EvolInstruct, answers it, and prints
{"wall_s": ...}.
"""

import json
import sys
import time

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import EvolInstruct


def main() -> None:
    job = json.load(sys.stdin)
    llm = OpenAILLM(model=job["model"], base_url=job["base_url"], api_key="not-needed",
                    generation_kwargs={"max_new_tokens": job["max_tokens"], "temperature": 0.0})
    with Pipeline(name="autoevol-peer") as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": text} for text in job["instructions"]],
                                 batch_size=len(job["instructions"]))
        evolve = EvolInstruct(llm=llm, num_evolutions=1, generate_answers=True,
                              input_batch_size=job["concurrency"])
        load >> evolve
    started = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    wall = time.perf_counter() - started
    rows = distiset["default"]["train"]
    print(json.dumps({"wall_s": wall, "rows": len(rows)}))


if __name__ == "__main__":
    main()
