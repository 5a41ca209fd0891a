"""What each section of the report shows, computed from a run's files; the templates only lay it out.

Values stay raw (numbers, dicts, None) where the page shows them as table cells: the
templates format them with the `cell` filter. Plots arrive rendered, as inline PNGs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from llm_tasks.templates import initial_method
from run_report import plots
from run_report.plots import Plot
from run_report.run_files import RunFiles, ancestry

QUALITY_COLUMNS = (
    "count", "mean_length", "median_length", "growth_over_parent", "distinct_1_chars", "distinct_2_chars",
    "distinct_1_words", "distinct_2_words", "pairwise_jaccard_distance", "hangul_ratio", "hangul_ratio_drift",
)
TOKEN_COLUMNS = ("calls", "cached_calls", "failed_calls", "requests", "input_tokens", "output_tokens",
                 "cached_input_tokens", "reasoning_tokens")
LEVEL_COUNT_COLUMNS = ("parents", "records", "failures", "skipped", "added")


@dataclass(frozen=True)
class Section:
    """One titled section of the page."""

    anchor: str
    """The id the navigation links to."""
    title: str
    template: str
    """The template file that lays out `data`."""
    data: Any


def level_key(level: Any) -> tuple[int, float, str]:
    """Sort order of level names: 'seed' first, then numbers, then anything else."""
    name = str(level)
    if name in ("seed", "0"):
        return (0, 0.0, name)
    try:
        return (1, float(name), name)
    except ValueError:
        return (2, 0.0, name)


def percent(rate: Any) -> str:
    return f"{rate * 100:.1f}%" if isinstance(rate, (int, float)) else "-"


def score_rate(score: Any) -> float | None:
    """The failure rate of a MethodScore, if there is one."""
    return score.get("failure_rate") if isinstance(score, dict) else None


# --- header ----------------------------------------------------------------------


@dataclass
class Header:
    """The page's opening facts and the per-level item counts."""

    name: str
    finished_at: Any
    method_id: Any
    stop_reason: Any
    rate_change: str
    """e0's dev failure rate against the final method's, or why they cannot be compared."""
    data_path: Any
    evol_model: Any
    optim_model: Any
    loop: Any
    level_rows: list[list]
    """[level, *LEVEL_COUNT_COLUMNS] per level, in level order."""
    rows_in: Any
    accounting_holds: Any
    unreadable_lines: dict[str, int]
    no_optimization: str | None = None
    """run.json's note when optimization was asked for and no step produced a usable candidate."""


def rate_change(run: dict) -> str:
    """e0 against the final method on the dev set, or why there is nothing to compare."""
    e0, final = score_rate(run.get("e0_score")), score_rate(run.get("final_score"))
    if e0 is None and final is None:
        return "not measured: no e0 score and no final score (method given by --method-file or --max-steps 0)"
    if e0 is None:
        return f"final {percent(final)}; no e0 score (method given by --method-file or --max-steps 0)"
    return f"e0 {percent(e0)} \u2192 final {percent(final)}"


def header(data: RunFiles) -> Header:
    run, settings = data.run, data.run.get("settings") or {}
    counts = run.get("counts") or {}
    levels = counts.get("levels") or {}
    holds = counts.get("accounting_holds")
    return Header(
        name=data.name, finished_at=run.get("finished_at"), method_id=run.get("method_id"),
        stop_reason=run.get("stop_reason"), rate_change=rate_change(run), data_path=settings.get("data_path"),
        evol_model=(settings.get("evol_llm") or {}).get("model"),
        optim_model=(settings.get("optim_llm") or {}).get("model"), loop=settings.get("loop"),
        level_rows=[[level, *(levels[level].get(c) for c in LEVEL_COUNT_COLUMNS)]
                    for level in sorted(levels, key=level_key)],
        rows_in=counts.get("rows_in", "-"), accounting_holds="-" if holds is None else holds,
        unreadable_lines=data.unreadable_lines, no_optimization=(run.get("optimization") or {}).get("note"))


# --- evolving method ---------------------------------------------------------------


@dataclass
class MethodChange:
    """e0 beside the chosen method, and the line diff between them."""

    e0: str
    chosen: str
    chosen_id: str
    method_file: Any
    """The --method-file the chosen method came from, if any."""
    diff: list[tuple[str, str]]
    """(css class, line) of a unified diff; empty when the methods are identical."""


def method_diff(before: str, after: str, before_name: str, after_name: str) -> list[tuple[str, str]]:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), before_name, after_name, lineterm="")
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    return [("head" if line.startswith(("+++", "---")) else kinds.get(line[:1], "same"), line) for line in lines]


def method_change(data: RunFiles) -> MethodChange:
    e0, chosen = initial_method(), data.run.get("method") or ""
    chosen_id = data.run.get("method_id") or "chosen"
    return MethodChange(e0=e0, chosen=chosen, chosen_id=chosen_id, diff=method_diff(e0, chosen, "e0", chosen_id),
                        method_file=(data.run.get("settings") or {}).get("method_file"))


# --- optimization ------------------------------------------------------------------


@dataclass
class Step:
    """One optimization step: its candidates against the incumbent, the decision, the analyzer's feedback."""

    step: Any
    kept_id: Any
    rows: list[tuple[Any, bool, list]]
    """(method id, kept?, [parse, failure rate, complexity gain, lenient parses, failures by reason])."""
    decision: Any
    feedback: list[str]
    race_rows: list[list] = field(default_factory=list)
    """issue 21: [candidate, verdict, items scored of the pool, wins, losses, evidence it is better, calls]."""
    held_out: str = ""
    """issue 21: the kept method's re-estimate on the dev items that did not select it, when a race adopted it."""


@dataclass
class Optimization:
    """The optimization history; no steps when the method was given or not optimized."""

    plot: Plot | None = None
    unscored: list[list] = field(default_factory=list)
    """[step, method id, parse, raw answer] of candidates that were never scored."""
    steps: list[Step] = field(default_factory=list)
    savings: str = ""
    """issue 21: candidate dev items scored against a full evaluation."""


def candidate_rate(candidate: dict) -> float | None:
    return score_rate(candidate.get("score"))


def kept_rate(step: dict) -> float | None:
    """The failure rate of the method this step kept: a candidate's or the incumbent's."""
    kept = step.get("kept_method_id")
    for candidate in step.get("candidates") or []:
        if candidate.get("method_id") == kept:
            return candidate_rate(candidate)
    incumbent = step.get("incumbent") or {}
    return score_rate(incumbent.get("score")) if incumbent.get("method_id") == kept else None


def e0_rate(run: dict) -> float | None:
    """e0's dev failure rate: from run.json, else from the first step's incumbent."""
    rate = score_rate(run.get("e0_score"))
    history = run.get("history") or []
    if rate is None and history and (history[0].get("incumbent") or {}).get("method_id") == "e0":
        rate = score_rate(history[0]["incumbent"].get("score"))
    return rate


def candidate_intervals(history: list[dict]) -> list[list[float] | None]:
    """issue 14: the Wilson 95% interval of every scored candidate, in the plot's order (None before issue 14)."""
    return [(c.get("score") or {}).get("failure_rate_interval")
            for step in history for c in step.get("candidates") or [] if candidate_rate(c) is not None]


def candidate_status(candidate: dict) -> Any:
    """issue 14: the parse column, with the method gate's rejection and its reason when there is one."""
    rejection = candidate.get("rejection")
    if not rejection:
        return candidate.get("parse")
    return f"{candidate.get('parse')}, rejected: {rejection.get('reason')} ({rejection.get('detail')})"


def optimization_plot(run: dict) -> Plot:
    history = run.get("history") or []
    points = [(step.get("step"), c.get("method_id"), candidate_rate(c))
              for step in history for c in step.get("candidates") or []]
    kept = [(0, e0_rate(run))] + [(s.get("step"), kept_rate(s)) for s in history]
    steps = sorted({0, *(s.get("step") for s in history if isinstance(s.get("step"), int))})
    return plots.optimization_plot([p for p in points if p[2] is not None], [k for k in kept if k[1] is not None],
                                   steps, intervals=candidate_intervals(history))


def candidate_row(candidate: dict, kept_id: Any) -> tuple[Any, bool, list]:
    score = candidate.get("score") or {}
    return (candidate.get("method_id"), candidate.get("method_id") == kept_id,
            [candidate_status(candidate), *(score.get(key) for key in
                                       ("failure_rate", "complexity_gain", "lenient_parses", "failures_by_reason"))])


def race_rows(step_row: dict) -> list[list]:
    """issue 21: each validated candidate's paired record against the incumbent and where it stopped."""
    rows = []
    for candidate in step_row.get("candidates") or []:
        score = candidate.get("score") or {}
        race = score.get("race")
        if race:
            verdict = race.get("verdict")
            if race.get("rounds", 1) > 1:
                verdict = f"{verdict} (after {race['rounds']} rounds)"
            rows.append([candidate.get("method_id"), verdict, f"{race.get('items')} of {race.get('pool')}",
                         race.get("wins"), race.get("losses"), race.get("evidence_better"), score.get("calls")])
    return rows


def held_out_note(step_row: dict) -> str:
    held = step_row.get("kept_held_out")
    if not held:
        return ""
    low, high = held.get("failure_rate_interval") or (0.0, 1.0)
    return (f"{step_row.get('kept_method_id')} re-estimated on the {held.get('dev_size')} dev items that did not "
            f"select it: failure rate {held.get('failure_rate'):.3f} [{low:.3f}-{high:.3f}]")


def savings_text(history: list[dict]) -> str:
    figures = [step.get("validation") or {} for step in history]
    scored, full = sum(f.get("items_scored", 0) for f in figures), sum(f.get("items_full", 0) for f in figures)
    if not full:
        return ""
    selection = next((step.get("selection") for step in history if step.get("selection")), "full")
    return (f"Validation (--selection {selection}): {scored} of {full} candidate dev items scored, "
            f"{1 - scored / full:.0%} fewer than a full evaluation, "
            f"{sum(f.get('calls', 0) for f in figures)} calls.")


def optimization_step(step_row: dict) -> Step:
    kept_id = step_row.get("kept_method_id")
    incumbent = step_row.get("incumbent") or {}
    rows = [candidate_row({**incumbent, "parse": "incumbent"}, kept_id)] if incumbent else []
    rows += [candidate_row(c, kept_id) for c in step_row.get("candidates") or []]
    feedback = [f.get("text") or f"(no feedback: {f.get('error')})" for f in step_row.get("feedback") or []]
    return Step(step=step_row.get("step"), kept_id=kept_id, rows=rows, decision=step_row.get("decision"),
                feedback=feedback, race_rows=race_rows(step_row), held_out=held_out_note(step_row))


def optimization(data: RunFiles) -> Optimization:
    history = data.run.get("history") or []
    if not history:
        return Optimization()
    unscored = [[s.get("step"), c.get("method_id"), candidate_status(c), c.get("raw")]
                for s in history for c in s.get("candidates") or [] if candidate_rate(c) is None]
    return Optimization(plot=optimization_plot(data.run), unscored=unscored,
                        steps=[optimization_step(s) for s in history], savings=savings_text(history))


# --- failure reasons ---------------------------------------------------------------


@dataclass
class FailureReasons:
    """Failures by (stage, reason): counts, how they spread over levels, and one example detail each."""

    count: int
    plot: Plot | None = None
    rows: list[list] = field(default_factory=list)
    """[stage, reason, count, by level, example detail], most common first."""


def failure_reasons(data: RunFiles) -> FailureReasons:
    if not data.failure_count:
        return FailureReasons(count=0)
    rows = []
    for (stage, reason), n in data.failure_counts.most_common():
        levels = data.failure_levels[stage, reason]
        by_level = ", ".join(f"{level}: {levels[level]}" for level in sorted(levels, key=level_key))
        rows.append([stage, reason, n, by_level, data.failure_details[stage, reason]])
    return FailureReasons(count=data.failure_count, plot=plots.failure_plot(data.failure_counts), rows=rows)


# --- instruction length --------------------------------------------------------------


@dataclass
class Lengths:
    """The instruction-length plot, if there is anything to measure."""

    plot: Plot | None
    has_records: bool


def lengths_by_level(data: RunFiles) -> dict[str, list[int]]:
    """Instruction lengths in characters: the seeds, then each level of records."""
    groups = data.lengths
    return {name: groups[name].tolist() for name in sorted(groups, key=level_key) if groups[name]}


def lengths(data: RunFiles) -> Lengths:
    groups = lengths_by_level(data)
    return Lengths(plot=plots.length_plot(groups) if groups else None, has_records=bool(data.record_count))


# --- quality -------------------------------------------------------------------------


@dataclass
class Quality:
    """run.json's quality metrics per level, if it has any."""

    headers: list[str]
    rows: list[list]
    """[level, *QUALITY_COLUMNS, failure_rates] per level, in level order."""
    plot: Plot | None


def quality(data: RunFiles) -> Quality:
    raw = data.run.get("quality")
    headers = ["level", *QUALITY_COLUMNS, "failure_rates"]
    if not isinstance(raw, dict) or not raw:
        return Quality(headers=headers, rows=[], plot=None)
    by_level = {name: raw[name] for name in sorted(raw, key=level_key) if isinstance(raw[name], dict)}
    rows = [[name, *(metrics.get(c) for c in QUALITY_COLUMNS), metrics.get("failure_rates")]
            for name, metrics in by_level.items()]
    return Quality(headers=headers, rows=rows, plot=plots.quality_plot(by_level))


# --- lineages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One row of a lineage: a seed, a record, or the failure that ended it."""

    label: str
    id: Any
    """The row's id; for a failure, its detail."""
    instruction: Any
    answer: Any
    """The response of a record, the raw model answer of a failure."""
    failed: bool = False


@dataclass
class Lineage:
    root: Any
    stages: list[Stage]


@dataclass
class Lineages:
    """The deepest lineages and those that ended in a failure."""

    deepest: Any
    has_records: bool
    reaching_deepest: list[Lineage]
    ending_in_failure: list[Lineage]


def lineage_stage(row: dict) -> Stage:
    level = row.get("level")
    label = "original" if level == 0 else f"level {level}"
    if row.get("lineage") == "breadth":
        label += " (new lineage, breadth)"
    return Stage(label=label, id=row.get("id"), instruction=row.get("instruction"), answer=row.get("response"))


def failed_stage(failure: dict) -> Stage:
    label = f"failed at level {failure.get('level')} ({failure.get('stage')}): {failure.get('reason')}"
    return Stage(label=label, id=failure.get("detail"), instruction=failure.get("instruction"),
                 answer=failure.get("raw"), failed=True)


def lineage(rows: list[dict], failure: dict | None = None) -> Lineage:
    stages = [lineage_stage(row) for row in rows] + ([failed_stage(failure)] if failure else [])
    return Lineage(root=(failure or rows[-1]).get("root_id"), stages=stages)


def lineages(data: RunFiles) -> Lineages:
    by_id = data.lineage_rows
    return Lineages(
        deepest=data.deepest, has_records=bool(data.record_count),
        reaching_deepest=[lineage(ancestry(end_id, by_id)) for end_id in data.lineage_ends],
        ending_in_failure=[lineage(ancestry(str(f.get("parent_id")), by_id), f) for f in data.shown_failures])


# --- tokens and cost -------------------------------------------------------------------


@dataclass
class Tokens:
    """Token usage per role with totals, the cost estimate and the time per phase."""

    headers: list[str]
    rows: list[list]
    """[role, *TOKEN_COLUMNS] per role."""
    totals: list
    plot: Plot | None
    cost: Any
    phases: dict
    phase_total: float


def token_total(usage: dict[str, dict], column: str) -> int | None:
    values = [u.get(column) for u in usage.values() if isinstance(u.get(column), (int, float))]
    return sum(values) if values else None


def tokens(data: RunFiles) -> Tokens:
    usage = {role: u for role, u in (data.run.get("token_usage") or {}).items() if isinstance(u, dict)}
    phases = data.run.get("phase_seconds")
    phases = phases if isinstance(phases, dict) else {}
    return Tokens(
        headers=["role", *TOKEN_COLUMNS],
        rows=[[role, *(u.get(c) for c in TOKEN_COLUMNS)] for role, u in usage.items()],
        totals=[token_total(usage, c) for c in TOKEN_COLUMNS], plot=plots.token_plot(usage) if usage else None,
        cost=data.run.get("cost"), phases=phases,
        phase_total=float(sum(s for s in phases.values() if isinstance(s, (int, float)))))


ENDPOINT_COLUMNS = ("llm", "base_url", "cap", "limit", "down", "requests", "succeeded", "errors", "input_tokens",
                    "output_tokens", "p50_s", "p90_s", "p99_s")


@dataclass
class Endpoints:
    """Per endpoint of each LLM: counters, latency percentiles and its concurrency limit over time."""

    headers: list[str]
    rows: list[list]
    """ENDPOINT_COLUMNS per endpoint."""
    plot: Plot | None
    """The limit over time, when some endpoint recorded more than its starting limit."""


def endpoints(data: RunFiles) -> Endpoints:
    listed = [e for e in data.run.get("endpoints") or [] if isinstance(e, dict)]
    rows = []
    for e in listed:
        latency = e.get("latency_seconds") or {}
        rows.append([e.get("llm"), e.get("base_url"), e.get("cap"), e.get("limit"), e.get("down"), e.get("requests"),
                     e.get("succeeded"), e.get("errors") or None, e.get("input_tokens"), e.get("output_tokens"),
                     latency.get("p50"), latency.get("p90"), latency.get("p99")])
    histories = {f"{e.get('llm')} {e.get('base_url')}": e.get("limit_history") or [] for e in listed}
    changed = any(len(points) > 1 for points in histories.values())
    return Endpoints(headers=list(ENDPOINT_COLUMNS), rows=rows, plot=plots.limit_plot(histories) if changed else None)


# --- the page --------------------------------------------------------------------------


def sections(data: RunFiles) -> list[Section]:
    """The titled sections, in page order; the header comes before them, untitled."""
    return [
        Section("method", "Evolving method", "method.html.j2", method_change(data)),
        Section("optimization", "Optimization", "optimization.html.j2", optimization(data)),
        Section("failures", "Failure reasons", "failures.html.j2", failure_reasons(data)),
        Section("lengths", "Instruction length per level", "lengths.html.j2", lengths(data)),
        Section("quality", "Quality", "quality.html.j2", quality(data)),
        Section("lineages", "Lineages", "lineages.html.j2", lineages(data)),
        Section("tokens", "Tokens and cost", "tokens.html.j2", tokens(data)),
        Section("endpoints", "Endpoints", "endpoints.html.j2", endpoints(data)),
    ]
