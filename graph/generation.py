"""Generation subgraph: one level of the dataset, its items streamed.

    start_level -> stream_level

Run once per level by the workflow graph; Studio shows each level's run and its counts.
Inside stream_level every item flows evolve -> rules -> diversity -> respond -> record on
its own (nodes/generator.py), so a slow answer holds one request slot and no other item.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from nodes.generator import start_level, stream_level
from state import GenerationState


def build_generation_graph():
    builder = StateGraph(GenerationState)
    builder.add_node("start_level", start_level)
    builder.add_node("stream_level", stream_level)

    builder.add_edge(START, "start_level")
    builder.add_edge("start_level", "stream_level")
    builder.add_edge("stream_level", END)
    return builder.compile(name="generation")
