"""Analyzer: turns this step's trajectories into feedback (one sample per candidate branch)."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from llm_access.client import LLMCallFailed
from nodes.optimizer import draw_index
from resources import resources_from, timed
from state import CandidateState, Feedback
from llm_tasks.optimization import analyze


@timed("optimization")
async def analyzer(state: CandidateState, config: RunnableConfig) -> dict:
    """Reads the incumbent, its dev failures by class, the trajectories and the sample index of one branch;
    writes its feedback entry."""
    resources = resources_from(config)
    draw = draw_index(state.step, state.sample_index, resources.settings.candidate_size)
    try:
        text = await analyze(resources.llms.optim, state.method, state.trajectories, draw, state.dev_failures)
        return {"feedback": [Feedback(sample_index=state.sample_index, text=text, error=None)]}
    except LLMCallFailed as exc:
        return {"feedback": [Feedback(sample_index=state.sample_index, text=None, error=str(exc))]}
