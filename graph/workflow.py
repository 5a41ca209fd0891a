"""The Auto Evol-Instruct workflow as one graph.

    load_data -> evolver + validator (the incumbent, e0, on every dev item) -> set_bar
    set_bar -> candidate x m (Send; subgraph: analyzer -> optimizer -> gate -> validator)
            -> later_rounds (a race: the better half goes on, round by round, the last to the pool's end)
            -> selector
    selector --go on--> evolver (+ validator when a race adopted a method on part of the dev set)
             --stop----> (validator ->) generation (once per level) --more levels--> generation
                                                                   --done--------> finalize

The incumbent is scored beside the trajectories, before any candidate is validated: each
candidate is compared with its outcomes item by item (method_selection.race), so a candidate
that cannot win stops costing calls. All candidate branches run in one superstep, each at its
own pace: the only waits are a trajectory's sequential rounds (inside the evolver) and the
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
from nodes.selector import selector, set_bar
from nodes.validator import later_rounds, missing_cases, validator
from settings import RunSettings
from resources import resources_from
from state import CandidateTask, RunInput, WorkflowState


def settings_of(config: RunnableConfig) -> RunSettings:
    return resources_from(config).settings


def incumbent_incomplete(state: WorkflowState) -> bool:
    """The incumbent has no result yet on some dev item: e0 at the start, a raced-in method after adoption."""
    return bool(missing_cases(state.method_score, state.dev))


def after_load(state: WorkflowState, config: RunnableConfig) -> list[str]:
    """Optimize unless a method file was given or max_steps is 0: trajectories and e0's score side by side."""
    return ["evolver", "validator"] if optimizes(settings_of(config)) else ["generation"]


def fan_out_candidates(state: WorkflowState, config: RunnableConfig) -> list[Send]:
    """m candidate branches from the same trajectories of the method they revise, each with the incumbent's outcomes to beat."""
    step, m = state.step + 1, settings_of(config).candidate_size
    revised = state.parent_score or state.method_score
    failures = dict(revised["failures_by_reason"]) if revised else {}
    return [Send("candidate", CandidateTask(sample_index=i, step=step, method=state.parent_method or state.method,
                                            trajectories=state.trajectories, dev=state.dev, dev_failures=failures,
                                            race_order=state.race_order, bar=state.bar))
            for i in range(m)]


def after_selection(state: WorkflowState) -> list[str]:
    """Another step until the selector names a stop reason; a raced-in method first gets its held-out score."""
    bar = ["validator"] if incumbent_incomplete(state) else []
    if state.stop_reason:
        return bar or ["generation"]
    return ["evolver", *bar]


def after_incumbent(state: WorkflowState) -> Literal["set_bar", "generation"]:
    """Beside the evolver the incumbent's score sets the bar of the next step; after the last step, generation."""
    return "generation" if state.stop_reason else "set_bar"


def after_level(state: WorkflowState, config: RunnableConfig) -> Literal["generation", "finalize"]:
    """Run the generation subgraph once per level, 1..loop."""
    return "generation" if state.level < settings_of(config).loop else "finalize"


def build_graph(checkpointer=None):
    builder = StateGraph(WorkflowState, input_schema=RunInput)
    builder.add_node("load_data", load_data)
    builder.add_node("evolver", evolver, retry_policy=NODE_RETRY)
    builder.add_node("candidate", build_candidate_graph())
    builder.add_node("validator", validator, retry_policy=NODE_RETRY)
    builder.add_node("set_bar", set_bar)
    builder.add_node("later_rounds", later_rounds, retry_policy=NODE_RETRY)
    builder.add_node("selector", selector)
    builder.add_node("generation", build_generation_graph())
    builder.add_node("finalize", finalize)

    builder.add_edge(START, "load_data")
    builder.add_conditional_edges("load_data", after_load, ["evolver", "validator", "generation"])
    # Two edges, not one from both: set_bar runs once after whichever of them ran in the superstep.
    builder.add_edge("evolver", "set_bar")
    builder.add_conditional_edges("validator", after_incumbent, ["set_bar", "generation"])
    builder.add_conditional_edges("set_bar", fan_out_candidates, ["candidate"])
    builder.add_edge("candidate", "later_rounds")
    builder.add_edge("later_rounds", "selector")
    builder.add_conditional_edges("selector", after_selection, ["evolver", "validator", "generation"])
    builder.add_conditional_edges("generation", after_level)
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="autoevol")


# Exported for LangGraph Studio (langgraph.json); run.py compiles its own with a checkpointer.
graph = build_graph()
