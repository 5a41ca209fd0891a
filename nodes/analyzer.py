"""Analyzer: turns this step's trajectories into feedback (one sample per candidate branch)."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from llm_access.client import LLMCallFailed
from resources import resources_from, timed
from state import CandidateState, Feedback
from llm_tasks.optimization import analyze


@timed("optimization")
async def analyzer(state: CandidateState, config: RunnableConfig) -> dict:
    """Reads the incumbent, its dev failures by class, the trajectories and the sample index of one branch;
    writes its feedback entry."""
    llm = resources_from(config).llms.optim
    try:
        text = await analyze(llm, state.method, state.trajectories, state.sample_index, state.dev_failures)
        return {"feedback": [Feedback(sample_index=state.sample_index, text=text, error=None)]}
    except LLMCallFailed as exc:
        return {"feedback": [Feedback(sample_index=state.sample_index, text=None, error=str(exc))]}
