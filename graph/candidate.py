"""Candidate subgraph: one sample's way from the step's trajectories to a scored candidate.

    analyzer --feedback--> optimizer --usable--> validator
             --failed---> end        --rejected or unusable--> end

The workflow sends one of these per sample index. Each branch is one task that moves on by
itself, so candidate 0 can be validating while candidate 3 is still being analysed: a slow
answer holds its own branch, not a whole wave of them. Only the feedback, the candidate and
its score flow back, appended to the step's lists.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph

from graph import NODE_RETRY
from nodes.analyzer import analyzer
from nodes.optimizer import optimizer
from nodes.validator import candidate_validator
from state import CandidateResult, CandidateState, CandidateTask


def after_analysis(state: CandidateState) -> Literal["optimizer", "__end__"]:
    """A failed analysis ends the branch: there is nothing to rewrite the method from."""
    return "optimizer" if state.feedback[-1]["text"] else END


def after_optimization(state: CandidateState) -> Literal["validator", "__end__"]:
    """The gate: a candidate the rules rejected, or with no method in the answer, costs no dev calls."""
    return "validator" if state.candidates[-1]["status"] == "usable" else END


def build_candidate_graph():
    builder = StateGraph(CandidateState, input_schema=CandidateTask, output_schema=CandidateResult)
    builder.add_node("analyzer", analyzer, retry_policy=NODE_RETRY)
    builder.add_node("optimizer", optimizer, retry_policy=NODE_RETRY)
    builder.add_node("validator", candidate_validator, retry_policy=NODE_RETRY)

    builder.add_edge(START, "analyzer")
    builder.add_conditional_edges("analyzer", after_analysis)
    builder.add_conditional_edges("optimizer", after_optimization)
    builder.add_edge("validator", END)
    return builder.compile(name="candidate")
