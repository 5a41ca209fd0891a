"""Analyzer: turns this step's trajectories into feedback (one sample per Send)."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from llm_access.client import LLMCallFailed
from resources import resources_from, timed
from state import AnalysisTask, Feedback
from llm_tasks.optimization import analyze


@timed("optimization")
async def analyzer(task: AnalysisTask, config: RunnableConfig) -> dict:
    """Reads the method and trajectories of one Send; writes one feedback entry."""
    llm = resources_from(config).llms.optim
    try:
        text = await analyze(llm, task["method"], task["trajectories"], task["sample_index"])
        return {"feedback": [Feedback(sample_index=task["sample_index"], text=text, error=None)]}
    except LLMCallFailed as exc:
        return {"feedback": [Feedback(sample_index=task["sample_index"], text=None, error=str(exc))]}
