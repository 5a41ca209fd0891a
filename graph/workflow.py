"""The Auto Evol-Instruct workflow as one graph.

    load_data -> evolver -> candidate x m (Send; subgraph: analyzer -> optimizer -> gate -> validator)
                         -> validator (Send, the incumbent, only while it has no score)
              -> selector (waits for every branch)
    selector --go on--> evolver
             --stop----> generation (once per level) --more levels--> generation
                                                      --done--------> finalize

All candidate branches and the incumbent's validation run in one superstep, each at its own
pace: the only waits are a trajectory's sequential rounds (inside the evolver) and the
selector's, which needs every score.
"""

from __future__ import annotations

from typing import Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from failure_checks.preflight import optimizes
from graph import NODE_RETRY
from graph.candidate import build_candidate_graph
from graph.generation import build_generation_graph
from nodes.evolver import evolver
from nodes.finalizer import finalize
from nodes.loader import load_data
from nodes.selector import selector
from nodes.validator import validator
from settings import RunSettings
from resources import resources_from
from state import CandidateTask, RunInput, ValidationTask, WorkflowState


def settings_of(config: RunnableConfig) -> RunSettings:
    return resources_from(config).settings


def after_load(state: WorkflowState, config: RunnableConfig) -> Literal["evolver", "generation"]:
    """Optimize unless a method file was given or max_steps is 0."""
    settings = settings_of(config)
    return "evolver" if optimizes(settings) else "generation"


def fan_out_candidates(state: WorkflowState, config: RunnableConfig) -> list[Send]:
    """m candidate branches from the same trajectories, and the incumbent's validation beside them.

    The selector stores the kept method's score, so the incumbent is scored once per method:
    in practice in the first step, where e0 has none yet.
    """
    step, m = state.step + 1, settings_of(config).candidate_size
    failures = dict(state.method_score["failures_by_reason"]) if state.method_score else {}
    sends = [Send("candidate", CandidateTask(sample_index=i, step=step, method=state.method,
                                             trajectories=state.trajectories, dev=state.dev, dev_failures=failures))
             for i in range(m)]
    if state.method_score is None:
        sends.append(Send("validator", ValidationTask(method_id=state.method_id, method=state.method, dev=state.dev)))
    return sends


def after_selection(state: WorkflowState) -> Literal["evolver", "generation"]:
    """Another step until the selector names a stop reason."""
    return "generation" if state.stop_reason else "evolver"


def after_level(state: WorkflowState, config: RunnableConfig) -> Literal["generation", "finalize"]:
    """Run the generation subgraph once per level, 1..loop."""
    return "generation" if state.level < settings_of(config).loop else "finalize"


def build_graph(checkpointer=None):
    builder = StateGraph(WorkflowState, input_schema=RunInput)
    builder.add_node("load_data", load_data)
    builder.add_node("evolver", evolver, retry_policy=NODE_RETRY)
    builder.add_node("candidate", build_candidate_graph())
    builder.add_node("validator", validator, retry_policy=NODE_RETRY)
    builder.add_node("selector", selector)
    builder.add_node("generation", build_generation_graph())
    builder.add_node("finalize", finalize)

    builder.add_edge(START, "load_data")
    builder.add_conditional_edges("load_data", after_load)
    builder.add_conditional_edges("evolver", fan_out_candidates, ["candidate", "validator"])
    builder.add_edge("candidate", "selector")
    builder.add_edge("validator", "selector")
    builder.add_conditional_edges("selector", after_selection)
    builder.add_conditional_edges("generation", after_level)
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="autoevol")


# Exported for LangGraph Studio (langgraph.json); run.py compiles its own with a checkpointer.
graph = build_graph()
