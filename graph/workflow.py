"""The Auto Evol-Instruct workflow as one graph.

    load_data -> evolver -> analyzer x m (Send) -> feedback_ready
              -> optimizer x m (Send) -> candidates_ready
              -> validator x (candidates + unscored incumbent) (Send) -> selector
    selector --go on--> evolver
             --stop----> generation (once per level) --more levels--> generation
                                                      --done--------> finalize
"""

from __future__ import annotations

from typing import Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, Send

from graph.generation import build_generation_graph
from nodes.analyzer import analyzer
from nodes.evolver import evolver
from nodes.finalizer import finalize
from nodes.loader import load_data
from nodes.optimizer import optimizer
from nodes.selector import selector
from nodes.validator import validator
from settings import RunSettings
from resources import resources_from
from state import AnalysisTask, OptimizationTask, RunInput, ValidationTask, WorkflowState

# The nodes already retry what is transient per LLM call; a node-level retry only
# repeats whole nodes on unexpected I/O trouble, never on user or logic errors.
NODE_RETRY = RetryPolicy(max_attempts=2, retry_on=(OSError,))


def settings_of(config: RunnableConfig) -> RunSettings:
    return resources_from(config).settings


def after_load(state: WorkflowState, config: RunnableConfig) -> Literal["evolver", "generation"]:
    """Optimize unless a method file was given or max_steps is 0."""
    settings = settings_of(config)
    return "generation" if settings.method_file or settings.max_steps == 0 else "evolver"


def fan_out_analysis(state: WorkflowState, config: RunnableConfig) -> list[Send]:
    """m independent analyses of the same trajectories."""
    m = settings_of(config).candidate_size
    return [Send("analyzer", AnalysisTask(sample_index=i, method=state.method, trajectories=state.trajectories))
            for i in range(m)]


def fan_out_optimization(state: WorkflowState) -> list[Send] | Literal["candidates_ready"]:
    """One optimizer per usable feedback sample."""
    sends = [Send("optimizer", OptimizationTask(sample_index=f["sample_index"], step=state.step + 1,
                                                method=state.method, feedback=f["text"]))
             for f in sorted(state.feedback, key=lambda f: f["sample_index"]) if f["text"]]
    return sends or "candidates_ready"


def fan_out_validation(state: WorkflowState) -> list[Send] | Literal["selector"]:
    """Score every usable candidate (never a rejected one), and the incumbent once per method."""
    tasks = [ValidationTask(method_id=c["method_id"], method=c["text"], dev=state.dev)
             for c in sorted(state.candidates, key=lambda c: c["method_id"])
             if c["text"] and c.get("status", "usable") == "usable"]
    if state.method_score is None:
        tasks.append(ValidationTask(method_id=state.method_id, method=state.method, dev=state.dev))
    return [Send("validator", task) for task in tasks] or "selector"


def after_selection(state: WorkflowState) -> Literal["evolver", "generation"]:
    """Another step until the selector names a stop reason."""
    return "generation" if state.stop_reason else "evolver"


def after_level(state: WorkflowState, config: RunnableConfig) -> Literal["generation", "finalize"]:
    """Run the generation subgraph once per level, 1..loop."""
    return "generation" if state.level < settings_of(config).loop else "finalize"


async def feedback_ready(state: WorkflowState) -> dict:
    """Join: waits for every analyzer branch, so the fan-out below sees all feedback."""
    return {}


async def candidates_ready(state: WorkflowState) -> dict:
    """Join: waits for every optimizer branch, so the incumbent is validated once."""
    return {}


def build_graph(checkpointer=None):
    builder = StateGraph(WorkflowState, input_schema=RunInput)
    builder.add_node("load_data", load_data)
    builder.add_node("evolver", evolver, retry_policy=NODE_RETRY)
    builder.add_node("analyzer", analyzer, retry_policy=NODE_RETRY)
    builder.add_node("optimizer", optimizer, retry_policy=NODE_RETRY)
    builder.add_node("feedback_ready", feedback_ready)
    builder.add_node("candidates_ready", candidates_ready)
    builder.add_node("validator", validator, retry_policy=NODE_RETRY)
    builder.add_node("selector", selector)
    builder.add_node("generation", build_generation_graph())
    builder.add_node("finalize", finalize)

    builder.add_edge(START, "load_data")
    builder.add_conditional_edges("load_data", after_load)
    builder.add_conditional_edges("evolver", fan_out_analysis, ["analyzer"])
    builder.add_edge("analyzer", "feedback_ready")
    builder.add_conditional_edges("feedback_ready", fan_out_optimization, ["optimizer", "candidates_ready"])
    builder.add_edge("optimizer", "candidates_ready")
    builder.add_conditional_edges("candidates_ready", fan_out_validation, ["validator", "selector"])
    builder.add_edge("validator", "selector")
    builder.add_conditional_edges("selector", after_selection)
    builder.add_conditional_edges("generation", after_level)
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="autoevol")


# Exported for LangGraph Studio (langgraph.json); run.py compiles its own with a checkpointer.
graph = build_graph()
