"""The peer side of the benchmark, run inside distilabel's own venv (not a project dependency).

Reads {"base_url", "instructions", "concurrency", "max_tokens", "top_p", "model", "evolve_template"}
as JSON on stdin; evolves each instruction once with distilabel's EvolInstruct, using our e0
prompt as its only mutation so both sides send the same prompts, answers it, and prints
{"wall_s", "rows", "output_tokens"}.
"""

import json
import os
import sys
import tempfile
import time

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import EvolInstruct

# distilabel runs each step in a worker process and keeps only the answer step's statistics,
# so every reply's completion tokens are appended to a file the parent sums afterwards.
TOKEN_LOG = os.environ.setdefault("AUTOEVOL_PEER_TOKENS", tempfile.mktemp(prefix="peer-tokens-"))


class CountingOpenAILLM(OpenAILLM):
    """OpenAILLM whose client logs each reply's completion tokens (its signatures stay untouched,
    because distilabel reads generation parameters from them)."""

    def load(self) -> None:
        super().load()
        create = self._aclient.chat.completions.create

        async def counted(*args, **kwargs):
            reply = await create(*args, **kwargs)
            with open(TOKEN_LOG, "a") as log:
                log.write(f"{reply.usage.completion_tokens if reply.usage else 0}\n")
            return reply

        self._aclient.chat.completions.create = counted


def main() -> None:
    job = json.load(sys.stdin)
    llm = CountingOpenAILLM(model=job["model"], base_url=job["base_url"], api_key="not-needed",
                            generation_kwargs={"max_new_tokens": job["max_tokens"], "temperature": 0.0,
                                               "top_p": job["top_p"]})
    with Pipeline(name="autoevol-peer") as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": text} for text in job["instructions"]],
                                 batch_size=len(job["instructions"]))
        evolve = EvolInstruct(llm=llm, num_evolutions=1, generate_answers=True,
                              mutation_templates={"e0": job["evolve_template"]},
                              input_batch_size=job["concurrency"])
        load >> evolve
    started = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    wall = time.perf_counter() - started
    with open(TOKEN_LOG) as log:
        tokens = sum(int(line) for line in log if line.strip())
    os.unlink(TOKEN_LOG)
    print(json.dumps({"wall_s": wall, "rows": len(distiset["default"]["train"]), "output_tokens": tokens}))


if __name__ == "__main__":
    main()
