"""Diversity hook: the place in each generation level where survivors can be filtered
or extended before they are answered. It passes the chunk through for now."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig

from resources import timed
from state import GenerationState


@timed("generation")
async def diversity(state: GenerationState, config: RunnableConfig) -> dict:
    """Reads the surviving chunk; writes nothing yet (later: dedup, in-breadth mutation)."""
    return {}
