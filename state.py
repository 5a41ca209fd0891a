"""Typed state of the workflow graph and of the generation subgraph.

Only small things live here: the train and dev cases, the per-step history and
byte offsets into the record files. The dataset itself streams through
`record_store.store.RecordStore`, so a checkpoint never grows with the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, create_model
from typing_extensions import NotRequired, TypedDict  # pydantic (Studio's state schema) needs this one before Python 3.12

from settings import SettingInput, setting_inputs


def collect(existing: list, update: list | None) -> list:
    """Reducer for per-step lists: parallel `Send` branches append; None clears for the next step."""
    return [] if update is None else existing + update


def merge_phase_times(existing: dict[str, list[float]], update: dict[str, list[float]]) -> dict[str, list[float]]:
    """Reducer: widen each phase's [first start, last end] window; the load phase starts a run's times afresh
    (a new run on a Studio thread that ran before)."""
    merged = {} if "load" in update else dict(existing)
    for phase, (start, end) in update.items():
        old = merged.get(phase)
        merged[phase] = [min(start, old[0]), max(end, old[1])] if old else [start, end]
    return merged


class Case(TypedDict):
    """An instruction the optimizer works on, under a stable id."""

    case_id: int
    """Position in the mini-batch or dev set, shown to the analyzer."""
    row_id: str
    """Id of the seed row it came from."""
    instruction: str
    """The level-0 text."""


class Trajectory(TypedDict):
    """One case evolved `loop` times in a chain."""

    case_id: int
    row_id: str
    stages: list[str]
    """stage 0 (the original) to the last stage that could be produced."""
    failure: str | None
    """Why the chain stopped early, if it did."""
    failed_stage: NotRequired[int | None]
    """The stage the failure belongs to: the last of `stages` when its text was produced and a rule
    rejected it, one past them when nothing could be produced (absent in checkpoints before issue 21)."""


class Feedback(TypedDict):
    """One analyzer sample: what failed and why."""

    sample_index: int
    text: str | None
    """The analysis, or None when the call failed."""
    error: str | None


class Candidate(TypedDict):
    """One method proposed by the optimizer in this step."""

    method_id: str
    sample_index: int
    text: str | None
    """The method, or None when the answer could not be used."""
    parse: str
    """marker, lenient, unparseable or llm_error."""
    raw: str
    """The optimizer's answer as given."""
    status: str
    """usable (validated), rejected (refused by the method gate) or unusable (no method in the answer)."""
    rejection: dict[str, str] | None
    """reason and detail when the method gate (rules file, `method:`) refused it; it then costs no dev calls."""


class MethodScore(TypedDict):
    """A method's result on the dev set."""

    method_id: str
    failure_rate: float
    failures_by_reason: dict[str, int]
    complexity_gain: float
    """Mean evolved/original length ratio over the items that evolved."""
    dev_size: int
    failure_rate_interval: list[float]
    """Wilson 95% interval [low, high] of the failure rate for this dev size."""
    lenient_parses: int
    """Evolutions accepted without the final marker (lenient parse mode)."""
    examples: list[dict[str, Any]]
    """Per dev case: the evolved text or the failure reason."""
    calls: NotRequired[int]
    """LLM calls its dev items cost (issue 21)."""
    race: NotRequired[dict[str, Any] | None]
    """A candidate's validation record: selection, verdict (why it stopped), items scored of the pool,
    wins and losses against the incumbent on the same items, evidence that it is better."""
    selected_on: NotRequired[list[int]]
    """A method a race adopted: the case ids it was adopted on, in race order (raced last from then on)."""
    selection_estimate: NotRequired[dict[str, Any]]
    """Its failure rate on those items, which selected it (biased low: the winner's curse)."""
    held_out: NotRequired[dict[str, Any]]
    """Its failure rate on the other dev items, scored after adoption: the unbiased estimate."""


class StepRecord(TypedDict):
    """Everything one optimization step saw, proposed and chose."""

    step: int
    batch_row_ids: list[str]
    trajectories: list[Trajectory]
    feedback: list[Feedback]
    candidates: list[dict[str, Any]]
    """Each candidate with its score (None when it could not be validated)."""
    incumbent: dict[str, Any]
    kept_method_id: str
    decision: str
    """Why the kept method was kept."""
    selection: NotRequired[str]
    """full, exact or race (issue 21)."""
    validation: NotRequired[dict[str, int]]
    """Candidate dev items scored, and how many a full evaluation would have scored (issue 21)."""
    kept_held_out: NotRequired[dict[str, Any]]
    """A raced-in method's failure rate on the dev items that did not select it."""
    revised: NotRequired[str]
    """The method this step's candidates revised: the incumbent, or under a race a candidate that looked ahead of it."""


class LevelItem(TypedDict, total=False):
    """An instruction moving through one generation level, from its parent to its record or failure."""

    id: str
    root_id: str
    parent_id: str | None
    level: int
    instruction: str
    original: str
    reference: Any
    parent_instruction: str
    raw: str
    lenient: bool
    elimination: dict[str, str]
    """reason and detail when a diversity step eliminated the item."""
    lineage: str
    """"breadth" for an instruction a breadth step created (a new lineage)."""
    added_by: str
    """The diversity step that created this item (it has no parent in the previous level)."""


# Studio runs are for looking, not for producing data: a few rows, apart from run.py's output.
STUDIO_DEFAULTS = {"test_run": True, "save_path": "evolution_result/studio"}


def _studio_field(setting: SettingInput) -> tuple[Any, Any]:
    annotation = Annotated[setting.annotation, Field(description=setting.help), *setting.constraints]
    return annotation, STUDIO_DEFAULTS.get(setting.key, setting.default)


RunInput = create_model(
    "RunInput",
    __doc__="The run settings, as LangGraph Studio's input form shows them; run.py passes its own in the config.",
    **{setting.key: _studio_field(setting) for setting in setting_inputs()},
)


@dataclass(kw_only=True)
class WorkflowState:
    """State of the whole run: optimization history, then generation progress."""

    train: list[Case] = field(default_factory=list)
    """Rows the optimizer draws mini-batches from."""
    dev: list[Case] = field(default_factory=list)
    """Fixed rows every method is scored on."""
    seed_count: int = 0
    """Rows in the generation set (level 0)."""
    rows_in: int = 0
    """Rows read from the input, valid or not."""
    step: int = 0
    """Optimization steps completed."""
    method: str = ""
    """The method currently kept (the incumbent)."""
    method_id: str = ""
    """Its id: e0, or s<step>c<sample> for an adopted candidate."""
    method_score: MethodScore | None = None
    """The incumbent's dev score, computed once per method."""
    e0_score: MethodScore | None = None
    """The initial method's dev score, for the summary."""
    batch: list[Case] = field(default_factory=list)
    """This step's mini-batch."""
    trajectories: list[Trajectory] = field(default_factory=list)
    """This step's evolution chains."""
    feedback: Annotated[list[Feedback], collect] = field(default_factory=list)
    """This step's analyses, one per sample."""
    candidates: Annotated[list[Candidate], collect] = field(default_factory=list)
    """This step's proposed methods."""
    scores: Annotated[list[MethodScore], collect] = field(default_factory=list)
    """This step's dev scores."""
    race_order: list[int] = field(default_factory=list)
    """This step's dev order (case ids): every candidate is scored in it (issue 21)."""
    bar: list[bool] = field(default_factory=list)
    """The incumbent's outcome on each item of that order (True: failed): what a candidate must beat."""
    raced: list[MethodScore] = field(default_factory=list)
    """A race's candidates that went on past the heat: each one's score over all the rounds it ran."""
    parent_method: str = ""
    """The method the next step revises, when not the incumbent: under a race, a candidate that looks ahead of it."""
    parent_id: str = ""
    """Its id ("" while the incumbent is revised)."""
    parent_score: MethodScore | None = None
    """Its race score against the incumbent."""
    history: list[StepRecord] = field(default_factory=list)
    """Every finished step, in order."""
    stale_steps: int = 0
    """Consecutive steps without a strictly better method."""
    stop_reason: str = ""
    """Why optimization ended."""
    level: int = 0
    """Generation level being built (0 before generation)."""
    level_spans: dict[str, list[int]] = field(default_factory=dict)
    """Per level, [start, end) byte offsets of its survivors in their file."""
    level_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per level: parents, records, failures."""
    phase_times: Annotated[dict[str, list[float]], merge_phase_times] = field(default_factory=dict)
    """Per phase, [first start, last end] as Unix times."""


class CandidateTask(TypedDict):
    """What one candidate branch starts from (one `Send` per sample index)."""

    sample_index: int
    step: int
    """The step being run, 1 for the first; with the sample index it names the candidate."""
    method: str
    """The method the candidate rewrites: the incumbent, or the race's parent (WorkflowState.parent_method)."""
    trajectories: list[Trajectory]
    dev: list[Case]
    """The fixed dev set the candidate is scored on."""
    dev_failures: NotRequired[dict[str, int]]
    """That method's dev failures by class, once it has a score; the analyzer is shown them."""
    race_order: NotRequired[list[int]]
    """The case ids in the order this step scores them (issue 21)."""
    bar: NotRequired[list[bool]]
    """The incumbent's outcome (True: failed) on each of them, in that order."""


class CandidateResult(TypedDict):
    """What a candidate branch hands back: appended to the step's lists in the workflow state."""

    feedback: Annotated[list[Feedback], collect]
    candidates: Annotated[list[Candidate], collect]
    scores: Annotated[list[MethodScore], collect]
    phase_times: Annotated[dict[str, list[float]], merge_phase_times]


@dataclass(kw_only=True)
class CandidateState:
    """One candidate's way through a step: analyze -> optimize -> (method gate) -> validate."""

    sample_index: int = 0
    step: int = 0
    method: str = ""
    """The method the candidate rewrites."""
    trajectories: list[Trajectory] = field(default_factory=list)
    dev: list[Case] = field(default_factory=list)
    dev_failures: dict[str, int] = field(default_factory=dict)
    """The incumbent's dev failures by class (empty before it has a score)."""
    race_order: list[int] = field(default_factory=list)
    """The case ids in this step's order."""
    bar: list[bool] = field(default_factory=list)
    """The incumbent's outcomes on them (True: failed)."""
    feedback: Annotated[list[Feedback], collect] = field(default_factory=list)
    """This branch's analysis (one entry)."""
    candidates: Annotated[list[Candidate], collect] = field(default_factory=list)
    """This branch's candidate (one entry, once the optimizer has answered)."""
    scores: Annotated[list[MethodScore], collect] = field(default_factory=list)
    """The candidate's dev score, when it was usable."""
    phase_times: Annotated[dict[str, list[float]], merge_phase_times] = field(default_factory=dict)


@dataclass(kw_only=True)
class GenerationState:
    """State of one generation level, shared by key with the workflow state.

    The level's items never enter it: they stream from the store and back into it.
    """

    level: int = 0
    """The level being built."""
    method: str = ""
    method_id: str = ""
    level_spans: dict[str, list[int]] = field(default_factory=dict)
    level_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    phase_times: Annotated[dict[str, list[float]], merge_phase_times] = field(default_factory=dict)
