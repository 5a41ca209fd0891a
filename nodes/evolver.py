"""Evolver: applies the current method `loop` times to a mini-batch of train cases."""

from __future__ import annotations

import random

from langchain_core.runnables import RunnableConfig

from nodes.sibling_calls import gather_or_cancel
from resources import resources_from, timed
from state import Case, Trajectory, WorkflowState
from llm_tasks.evolution import evolve


def sample_batch(train: list[Case], size: int, seed: int, step: int) -> list[Case]:
    """A reproducible mini-batch for this step, ids renumbered as the analyzer will see them."""
    picked = random.Random(f"{seed}:{step}").sample(train, min(size, len(train)))
    return [Case(case_id=i + 1, row_id=c["row_id"], instruction=c["instruction"]) for i, c in enumerate(picked)]


async def _trajectory(case: Case, method: str, loop: int, resources) -> Trajectory:
    stages, failure, failed_stage = [case["instruction"]], None, None
    for _ in range(loop):
        outcome = await evolve(resources.llms.evol, method, stages[-1], resources.rules)
        if outcome.failure is not None:
            failed_stage = len(stages)
            # The failed text is kept for the analyzer: it is what the method did wrong.
            if outcome.candidate_text:
                stages.append(outcome.candidate_text)
            failure = f"{outcome.failure.reason}: {outcome.failure.detail}".rstrip(": ")
            break
        stages.append(outcome.text)
    return Trajectory(case_id=case["case_id"], row_id=case["row_id"], stages=stages, failure=failure,
                      failed_stage=failed_stage)


@timed("optimization")
async def evolver(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads train, step and the method the step revises (the incumbent, or a race's parent); writes this
    step's batch and trajectories."""
    resources = resources_from(config)
    settings = resources.settings
    batch = sample_batch(state.train, settings.batch_size, settings.seed, state.step)
    trajectories = await gather_or_cancel(_trajectory(c, state.parent_method or state.method, settings.loop, resources) for c in batch)
    return {"batch": batch, "trajectories": list(trajectories)}
