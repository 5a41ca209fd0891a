"""Generation subgraph: one level of the dataset, chunk by chunk.

    start_level -> next_chunk -> evolve -> eliminate -> diversity -> respond --more--> next_chunk
                                                                             \\--done--> finish_level
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph

from nodes.diversity import diversity
from nodes.generator import eliminate, evolve_chunk, finish_level, next_chunk, respond_chunk, start_level
from state import GenerationState


def more_parents(state: GenerationState) -> Literal["next_chunk", "finish_level"]:
    """Another chunk while the parents' cursor has not reached the end of the previous level."""
    return "next_chunk" if state.cursor < state.level_spans[str(state.level - 1)][1] else "finish_level"


def build_generation_graph():
    builder = StateGraph(GenerationState)
    builder.add_node("start_level", start_level)
    builder.add_node("next_chunk", next_chunk)
    builder.add_node("evolve", evolve_chunk)
    builder.add_node("eliminate", eliminate)
    builder.add_node("diversity", diversity)
    builder.add_node("respond", respond_chunk)
    builder.add_node("finish_level", finish_level)

    builder.add_edge(START, "start_level")
    builder.add_conditional_edges("start_level", more_parents)
    builder.add_edge("next_chunk", "evolve")
    builder.add_edge("evolve", "eliminate")
    builder.add_edge("eliminate", "diversity")
    builder.add_edge("diversity", "respond")
    builder.add_conditional_edges("respond", more_parents)
    builder.add_edge("finish_level", END)
    return builder.compile(name="generation")
