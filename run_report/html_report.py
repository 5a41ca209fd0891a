"""The HTML run report: one self-contained page that shows what a finished run did.

It reads the files a run leaves in its directory (run.json, records.jsonl,
failures.jsonl, seeds.jsonl) and writes <run_dir>/report.html. The page carries
everything inline (plots are base64 PNGs, CSS is in a <style> tag) so it can be
mailed, archived or opened offline; nothing is fetched from the network.

The row files are streamed, never loaded whole: a first pass keeps one length per
record, failure counters and the ids of the lineages to show; further passes collect
just those lineages' rows. Memory stays flat however large the run.

Plots hold only ids, reasons and numbers: matplotlib may lack a Korean font,
while the browser shows Korean text in the HTML with the CJK fonts in the CSS.

Command line: `python -m run_report.html_report RUN_DIR` writes the report and prints its path.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import difflib
import html
import io
import json
import sys
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI; must precede any pyplot import
from matplotlib.figure import Figure  # noqa: E402  (after the backend choice)
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from llm_tasks.templates import initial_method  # noqa: E402

REPORT_NAME = "report.html"
QUALITY_COLUMNS = (
    "count", "mean_length", "median_length", "growth_over_parent", "distinct_1_chars", "distinct_2_chars",
    "distinct_1_words", "distinct_2_words", "pairwise_jaccard_distance", "hangul_ratio", "hangul_ratio_drift",
)
TOKEN_COLUMNS = ("calls", "cached_calls", "failed_calls", "requests", "input_tokens", "output_tokens")
MAX_DEEP_LINEAGES = 5
MAX_FAILED_LINEAGES = 3


class NotARunDirectory(Exception):
    """The directory holds no readable run.json, so there is no run to report on."""


@dataclass
class RunFiles:
    """What the report shows of a run directory: run.json, and summaries of its row files."""

    name: str
    run: dict
    unreadable_lines: dict[str, int] = field(default_factory=dict)
    """Lines of a .jsonl file that were not a JSON object, by file name (e.g. a truncated last line)."""
    record_count: int = 0
    lengths: dict[str, array] = field(default_factory=dict)
    """Instruction lengths in characters, of the seeds ('seed') and of each level's records."""
    failure_count: int = 0
    failure_counts: Counter = field(default_factory=Counter)
    """Failures by (stage, reason), in order of first appearance."""
    failure_levels: dict[tuple[str, str], Counter] = field(default_factory=dict)
    failure_details: dict[tuple[str, str], Any] = field(default_factory=dict)
    """The detail of the first failure of each (stage, reason)."""
    deepest: Any = None
    """The deepest level a record reached."""
    lineage_ends: list[str] = field(default_factory=list)
    """Ids of the records at the deepest level whose lineages are shown."""
    shown_failures: list[dict] = field(default_factory=list)
    """The failures whose lineages are shown."""
    lineage_rows: dict[str, dict] = field(default_factory=dict)
    """The seed and record rows of the shown lineages, by str(id), the last row of an id winning."""


# --- reading ---------------------------------------------------------------------


class JsonlRows:
    """The JSON objects of a .jsonl file, read line by line each time it is iterated; a missing file is empty.

    Lines that are not a JSON object (or not UTF-8) are skipped, and counted in `unreadable` by the last pass.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable = 0

    def __iter__(self) -> Iterator[dict]:
        self.unreadable = 0
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for raw in handle:  # JSONL lines end at "\n" only; text inside may hold other line breaks
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    row = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    self.unreadable += 1
                    continue
                if isinstance(row, dict):
                    yield row
                else:
                    self.unreadable += 1


def read_run_json(run_dir: Path) -> dict:
    """run.json as a dict, or NotARunDirectory with the one-line reason."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise NotARunDirectory(f"{run_dir} has no run.json (is it a run directory?)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotARunDirectory(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(run, dict):
        raise NotARunDirectory(f"{path} does not hold a JSON object")
    return run


def scan_records(data: RunFiles, records: JsonlRows) -> None:
    """Counts records, keeps their lengths by level and picks the deepest lineages to show (by id)."""
    ends: list[str] = []
    for record in records:
        data.record_count += 1
        if isinstance(record.get("instruction"), str):
            data.lengths.setdefault(str(record.get("level")), array("q")).append(len(record["instruction"]))
        level = record.get("level") or 0
        if data.record_count == 1 or level > data.deepest:  # as max(): the first of equal maxima
            data.deepest, ends = level, []
        if level == data.deepest:
            ends.append(str(record.get("id")))
    data.lineage_ends = spread(sorted(ends), MAX_DEEP_LINEAGES)


def scan_failures(data: RunFiles, failures: JsonlRows) -> None:
    """Counts failures by (stage, reason) and level, and picks the failures whose lineages are shown."""
    best_by_reason: dict[Any, tuple] = {}  # reason -> (order key, index, failure) of its first failure
    first: list[tuple] = []  # the first few failures overall, as (order key, index, failure)
    for index, failure in enumerate(failures):
        data.failure_count += 1
        key = (str(failure.get("stage")), str(failure.get("reason")))
        data.failure_counts[key] += 1
        data.failure_levels.setdefault(key, Counter())[str(failure.get("level"))] += 1
        data.failure_details.setdefault(key, failure.get("detail"))
        entry = (failure_order(failure), index, failure)
        reason = failure.get("reason")
        if reason not in best_by_reason or entry[:2] < best_by_reason[reason][:2]:
            best_by_reason[reason] = entry
        if len(first) < 2 * MAX_FAILED_LINEAGES or entry[:2] < first[-1][:2]:
            bisect.insort(first, entry, key=lambda e: e[:2])
            del first[2 * MAX_FAILED_LINEAGES:]
    # Every reason's first failure and the first few overall are all contrasting_failures can pick
    # (failure lines are distinct: the store writes each (id, level) once).
    candidates = {entry[1]: entry for entry in [*best_by_reason.values(), *first]}
    data.shown_failures = contrasting_failures([candidates[i][2] for i in sorted(candidates)])


def collect_lineages(data: RunFiles, seeds: JsonlRows, records: JsonlRows) -> None:
    """The rows of the shown lineages: one pass over seeds and records per generation back to the root."""
    wanted = set(data.lineage_ends) | {str(f.get("parent_id")) for f in data.shown_failures}
    while wanted:
        found = {}
        for row in chain(seeds, records):
            if (key := str(row.get("id"))) in wanted:
                found[key] = row  # the last row of an id wins, as in a dict of all rows
        data.lineage_rows.update(found)
        # ancestry() follows parent_id as it is: only a string can match a str(id) key
        wanted = {parent for row in found.values()
                  if isinstance(parent := row.get("parent_id"), str) and parent not in data.lineage_rows}


def load_run(run_dir: Path) -> RunFiles:
    """run.json and summaries of the three row files of a run directory, read as streams."""
    data = RunFiles(name=run_dir.resolve().name, run=read_run_json(run_dir))
    records, failures, seeds = (JsonlRows(run_dir / f"{name}.jsonl") for name in ("records", "failures", "seeds"))
    data.lengths["seed"] = array("q", (len(s["instruction"]) for s in seeds if isinstance(s.get("instruction"), str)))
    scan_records(data, records)
    scan_failures(data, failures)
    for name, rows in (("records", records), ("failures", failures), ("seeds", seeds)):
        if rows.unreadable:
            data.unreadable_lines[f"{name}.jsonl"] = rows.unreadable
    collect_lineages(data, seeds, records)
    return data


# --- HTML pieces -----------------------------------------------------------------


def esc(value: Any) -> str:
    """Any value as escaped HTML text; None becomes empty."""
    return html.escape("" if value is None else str(value))


def plain(value: Any) -> str:
    """A value as cell text: None as '-', floats to 3 decimals, dicts as 'key: value' pairs.

    Floats below 0.01 keep two significant digits, so a tiny cost or drift does not read as zero.
    """
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if 0 < abs(value) < 0.01:
            return f"{value:.2g}"
        return f"{value:,.3f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {plain(item)}" for key, item in value.items()) or "-"
    return str(value)


def fmt(value: Any) -> str:
    """A value as escaped cell text (see plain)."""
    return esc(plain(value))


def percent(rate: Any) -> str:
    return f"{rate * 100:.1f}%" if isinstance(rate, (int, float)) else "-"


def table(headers: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table; headers are plain text (none: no header row), row cells are already HTML.

    Long metric names may break after an underscore, and a table wider than the page scrolls on its own.
    """
    head = "".join(f"<th>{esc(h).replace('_', '_<wbr>')}</th>" for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table class="{css_class}">{head}<tbody>{body}</tbody></table></div>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def text_block(text: Any) -> str:
    """Instruction or method text, wrapped but with its own line breaks kept."""
    return f'<div class="text">{esc(text)}</div>' if text else '<div class="text empty">(empty)</div>'


def png(fig: Figure, alt: str) -> str:
    """The figure as an inline base64 PNG, so the page needs no separate image files."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'


def level_key(level: Any) -> tuple[int, float, str]:
    """Sort order of level names: 'seed' first, then numbers, then anything else."""
    name = str(level)
    if name in ("seed", "0"):
        return (0, 0.0, name)
    try:
        return (1, float(name), name)
    except ValueError:
        return (2, 0.0, name)


# --- 1. header -------------------------------------------------------------------


def score_rate(score: Any) -> float | None:
    """The failure rate of a MethodScore, if there is one."""
    return score.get("failure_rate") if isinstance(score, dict) else None


def rate_change(run: dict) -> str:
    """e0 against the final method on the dev set, or why there is nothing to compare."""
    e0, final = score_rate(run.get("e0_score")), score_rate(run.get("final_score"))
    if e0 is None and final is None:
        return "not measured: no e0 score and no final score (method given by --method-file or --max-steps 0)"
    if e0 is None:
        return f"final {percent(final)}; no e0 score (method given by --method-file or --max-steps 0)"
    return f"e0 {percent(e0)} \u2192 final {percent(final)}"


def header_facts(data: RunFiles) -> list[list[str]]:
    run, settings = data.run, data.run.get("settings") or {}
    evol, optim = settings.get("evol_llm") or {}, settings.get("optim_llm") or {}
    facts = [
        ("finished at", fmt(run.get("finished_at"))),
        ("chosen method", f"<b>{fmt(run.get('method_id'))}</b>"),
        ("stop reason", fmt(run.get("stop_reason"))),
        ("dev failure rate", esc(rate_change(run))),
        ("data", fmt(settings.get("data_path"))),
        ("evol / optim model", f"{fmt(evol.get('model'))} / {fmt(optim.get('model'))}"),
        ("loop (levels)", fmt(settings.get("loop"))),
    ]
    return [[esc(name), value] for name, value in facts]


def level_counts_table(counts: dict) -> str:
    levels = counts.get("levels") or {}
    if not levels:
        return note("run.json has no per-level counts.")
    columns = ("parents", "records", "failures", "skipped", "added")
    rows = [[esc(level), *(fmt(levels[level].get(c)) for c in columns)] for level in sorted(levels, key=level_key)]
    holds = counts.get("accounting_holds")
    return table(["level", *columns], rows) + note(f"rows in: {counts.get('rows_in', '-')}; "
                                                   f"every parent accounted for: {'-' if holds is None else holds}")


def header_section(data: RunFiles) -> str:
    unreadable = "".join(note(f"{name}: {n} unreadable line(s) skipped") for name, n in data.unreadable_lines.items())
    return (f"<h1>Run report: {esc(data.name)}</h1>" + table([], header_facts(data), "facts")
            + "<h3>Items per level</h3>" + level_counts_table(data.run.get("counts") or {}) + unreadable)


# --- 2. evolving method ------------------------------------------------------------


def method_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified line diff with added and removed lines coloured."""
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), before_name, after_name, lineterm=""))
    if not lines:
        return note("The chosen method is identical to e0.")
    css = {"+": "add", "-": "del", "@": "hunk"}
    rows = []
    for line in lines:
        kind = "head" if line.startswith(("+++", "---")) else css.get(line[:1], "same")
        rows.append(f'<div class="{kind}">{esc(line) or "&nbsp;"}</div>')
    return f'<div class="diff">{"".join(rows)}</div>'


def method_section(data: RunFiles) -> str:
    e0, chosen = initial_method(), data.run.get("method") or ""
    chosen_id = data.run.get("method_id") or "chosen"
    source = (data.run.get("settings") or {}).get("method_file")
    origin = note(f"The chosen method came from --method-file {source}; it was not optimized.") if source else ""
    columns = (f'<div class="columns"><div><h3>e0 (initial method)</h3>{text_block(e0)}</div>'
               f'<div><h3>{esc(chosen_id)} (chosen)</h3>{text_block(chosen)}</div></div>')
    return origin + columns + f"<h3>Diff e0 &rarr; {esc(chosen_id)}</h3>" + method_diff(e0, chosen, "e0", chosen_id)


# --- 3. optimization ---------------------------------------------------------------


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


def candidate_points(history: list[dict]) -> list[tuple[Any, Any, float]]:
    """(step, method id, failure rate) of every scored candidate."""
    points = [(step.get("step"), c.get("method_id"), candidate_rate(c))
              for step in history for c in step.get("candidates") or []]
    return [(x, name, y) for x, name, y in points if y is not None]


def optimization_plot(run: dict) -> str:
    history = run.get("history") or []
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    points = candidate_points(history)
    ax.scatter([x for x, _, _ in points], [y for _, _, y in points], color="tab:blue", alpha=0.7, label="candidate")
    for x, name, y in points:
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    kept = [(0, e0_rate(run))] + [(s.get("step"), kept_rate(s)) for s in history]
    kept = [(x, y) for x, y in kept if y is not None]
    ax.plot([x for x, _ in kept], [y for _, y in kept], color="tab:red", marker="s", label="kept method")
    ax.set_xticks(sorted({0, *(s.get("step") for s in history if isinstance(s.get("step"), int))}))
    ax.set(xlabel="optimization step (0 = e0)", ylabel="dev failure rate", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return png(fig, "dev failure rate per optimization step")


def candidate_row(candidate: dict, kept_id: Any) -> list[str]:
    score = candidate.get("score") or {}
    name = fmt(candidate.get("method_id")) + (" <b>(kept)</b>" if candidate.get("method_id") == kept_id else "")
    return [name, fmt(candidate.get("parse")), fmt(score.get("failure_rate")), fmt(score.get("complexity_gain")),
            fmt(score.get("lenient_parses")), fmt(score.get("failures_by_reason"))]


def feedback_text(feedback: dict) -> str:
    return feedback.get("text") or f"(no feedback: {feedback.get('error')})"


def step_block(step: dict) -> str:
    """One step: its candidates against the incumbent, the decision, and the analyzer's feedback."""
    kept_id = step.get("kept_method_id")
    incumbent = step.get("incumbent") or {}
    rows = [candidate_row({**incumbent, "parse": "incumbent"}, kept_id)] if incumbent else []
    rows += [candidate_row(c, kept_id) for c in step.get("candidates") or []]
    headers = ["method", "parse", "failure rate", "complexity gain", "lenient parses", "failures by reason"]
    feedback = "".join(f"<li>{text_block(feedback_text(f))}</li>" for f in step.get("feedback") or [])
    feedback_html = f"<details><summary>analyzer feedback</summary><ol>{feedback}</ol></details>" if feedback else ""
    return (f"<h3>Step {fmt(step.get('step'))}: kept {fmt(kept_id)}</h3>" + table(headers, rows)
            + f'<p class="decision">{esc(step.get("decision"))}</p>' + feedback_html)


def unscored_table(history: list[dict]) -> str:
    """Candidates the plot leaves out because they were never scored (unparseable answer or LLM error)."""
    rows = [[fmt(s.get("step")), fmt(c.get("method_id")), fmt(c.get("parse")),
             f"<details><summary>raw answer</summary>{text_block(c.get('raw'))}</details>"]
            for s in history for c in s.get("candidates") or [] if candidate_rate(c) is None]
    if not rows:
        return ""
    return "<h3>Candidates without a score</h3>" + table(["step", "candidate", "parse", "raw"], rows, "small")


def optimization_section(data: RunFiles) -> str:
    history = data.run.get("history") or []
    if not history:
        return note("No optimization history: the run used --method-file or --max-steps 0, so only the given "
                    "method was applied.")
    return optimization_plot(data.run) + unscored_table(history) + "".join(step_block(s) for s in history)


# --- 4. failure reasons ------------------------------------------------------------


def failure_plot(counts: Counter) -> str:
    bars = sorted(counts.items(), key=lambda item: item[1])  # barh draws bottom-up: largest ends on top
    stages = sorted({stage for (stage, _), _ in bars})
    colours = {stage: f"C{i}" for i, stage in enumerate(stages)}
    fig = Figure(figsize=(9, 1.2 + 0.35 * len(bars)))
    ax = fig.add_subplot()
    ax.barh(range(len(bars)), [n for _, n in bars], color=[colours[stage] for (stage, _), _ in bars])
    ax.set_yticks(range(len(bars)), [f"{reason} ({stage})" for (stage, reason), _ in bars])
    for y, (_, n) in enumerate(bars):
        ax.annotate(str(n), (n, y), textcoords="offset points", xytext=(3, -3), fontsize=8)
    ax.legend(handles=[Patch(color=colours[s], label=s) for s in stages], title="stage", fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1))  # outside the axes: the longest bar reaches the edge
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("failures")
    return png(fig, "failures by reason and stage")


def failure_section(data: RunFiles) -> str:
    if not data.failure_count:
        return note("failures.jsonl is empty or missing: no item failed.")
    counts = data.failure_counts
    rows = []
    for (stage, reason), n in counts.most_common():
        levels = data.failure_levels[stage, reason]
        by_level = ", ".join(f"{level}: {levels[level]}" for level in sorted(levels, key=level_key))
        rows.append([esc(stage), esc(reason), fmt(n), esc(by_level), esc(data.failure_details[stage, reason])])
    return (failure_plot(counts) + f"<p>{data.failure_count} failures in all.</p>"
            + table(["stage", "reason", "count", "by level", "example detail"], rows))


# --- 5. instruction length -----------------------------------------------------------


def lengths_by_level(data: RunFiles) -> dict[str, list[int]]:
    """Instruction lengths in characters: the seeds, then each level of records."""
    groups = data.lengths
    return {name: groups[name].tolist() for name in sorted(groups, key=level_key) if groups[name]}


def length_section(data: RunFiles) -> str:
    groups = lengths_by_level(data)
    if not groups:
        return note("No seeds and no records: there are no instructions to measure.")
    fig = Figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    ax.boxplot(list(groups.values()), tick_labels=[f"{name}\n(n={len(v)})" for name, v in groups.items()],
               showmeans=True)
    ax.set(xlabel="level", ylabel="instruction length (characters)")
    ax.grid(axis="y", alpha=0.3)
    missing = "" if data.record_count else note("records.jsonl is empty or missing: only the seeds are shown.")
    return png(fig, "instruction length per level") + note("Box: quartiles; line: median; triangle: mean.") + missing


# --- 6. quality ----------------------------------------------------------------------


def quality_plot(quality: dict[str, dict]) -> str:
    names = list(quality)
    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot()
    for metric, marker in (("distinct_2_chars", "o"), ("pairwise_jaccard_distance", "s")):
        values = [quality[name].get(metric) for name in names]
        ax.plot(names, [v if isinstance(v, (int, float)) else float("nan") for v in values], marker=marker,
                label=metric)
    ax.set(xlabel="level", ylabel="value", ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig, "diversity per level")


def quality_section(data: RunFiles) -> str:
    raw = data.run.get("quality")
    if not isinstance(raw, dict) or not raw:
        return note("run.json has no quality metrics (the run predates them or finished without a finalizer).")
    quality = {name: raw[name] for name in sorted(raw, key=level_key) if isinstance(raw[name], dict)}
    rows = [[esc(name), *(fmt(metrics.get(c)) for c in QUALITY_COLUMNS), fmt(metrics.get("failure_rates"))]
            for name, metrics in quality.items()]
    return table(["level", *QUALITY_COLUMNS, "failure_rates"], rows, "small") + quality_plot(quality)


# --- 7. lineages -----------------------------------------------------------------------


def ancestry(parent_id: Any, by_id: dict[str, dict]) -> list[dict]:
    """The rows from the lineage's root down to parent_id; stops at an unknown id or a loop."""
    chain, seen = [], set()
    while parent_id in by_id and parent_id not in seen:
        seen.add(parent_id)
        chain.append(by_id[parent_id])
        parent_id = by_id[parent_id].get("parent_id")
    return chain[::-1]


def stage_item(row: dict) -> str:
    level = row.get("level")
    label = "original" if level == 0 else f"level {level}"
    if row.get("lineage") == "breadth":
        label += " (new lineage, breadth)"
    response = row.get("response")
    answer = f"<details><summary>response</summary>{text_block(response)}</details>" if response else ""
    return f'<li><span class="stage">{esc(label)}</span> <span class="id">{esc(row.get("id"))}</span>' \
           f"{text_block(row.get('instruction'))}{answer}</li>"


def failed_item(failure: dict) -> str:
    reason = f"failed at level {failure.get('level')} ({failure.get('stage')}): {failure.get('reason')}"
    raw = failure.get("raw")
    raw_html = f"<details><summary>raw model answer</summary>{text_block(raw)}</details>" if raw else ""
    return (f'<li class="failed"><span class="stage">{esc(reason)}</span> <span class="id">{esc(failure.get("detail"))}'
            f"</span>{text_block(failure.get('instruction'))}{raw_html}</li>")


def lineage_block(rows: list[dict], failure: dict | None = None) -> str:
    items = "".join(stage_item(row) for row in rows) + (failed_item(failure) if failure else "")
    root = (failure or rows[-1]).get("root_id")
    return f'<div class="lineage"><h4>{esc(root)}</h4><ol>{items}</ol></div>'


def spread(items: list[dict], count: int) -> list[dict]:
    """count items evenly spaced over the list, so a sorted list of ids yields more than one language or source."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def failure_order(failure: dict) -> tuple:
    """Deepest first, then by id."""
    return -(failure.get("level") or 0), str(failure.get("id"))


def contrasting_failures(failures: list[dict]) -> list[dict]:
    """Up to MAX_FAILED_LINEAGES failures, deepest first, each reason once before any repeats."""
    ordered = sorted(failures, key=failure_order)
    picked: list[dict] = []
    for failure in ordered:
        if failure.get("reason") not in {p.get("reason") for p in picked}:
            picked.append(failure)
    picked = picked[:MAX_FAILED_LINEAGES]
    return picked + [f for f in ordered if f not in picked][:MAX_FAILED_LINEAGES - len(picked)]


def lineage_section(data: RunFiles) -> str:
    by_id = data.lineage_rows
    parts = []
    if data.record_count:
        parts.append(f"<h3>Lineages reaching level {esc(data.deepest)}</h3>")
        parts += [lineage_block(ancestry(end_id, by_id)) for end_id in data.lineage_ends]
    else:
        parts.append(note("records.jsonl is empty or missing: no instruction survived evolution."))
    if data.failure_count:
        parts.append("<h3>Lineages that ended in a failure</h3>")
        parts += [lineage_block(ancestry(str(f.get("parent_id")), by_id), f) for f in data.shown_failures]
    return "".join(parts)


# --- 8. tokens and cost --------------------------------------------------------------------


def token_total(usage: dict[str, dict], column: str) -> int | None:
    values = [u.get(column) for u in usage.values() if isinstance(u.get(column), (int, float))]
    return sum(values) if values else None


def token_plot(usage: dict[str, dict]) -> str:
    roles = list(usage)
    fig = Figure(figsize=(9, 1.4 + 0.5 * len(roles)))
    ax = fig.add_subplot()
    positions = range(len(roles))
    for offset, column in ((-0.2, "input_tokens"), (0.2, "output_tokens")):
        ax.barh([p + offset for p in positions], [usage[r].get(column) or 0 for r in roles], height=0.4, label=column)
    ax.set_yticks(list(positions), roles)
    ax.invert_yaxis()  # roles top-down in table order
    ax.set_xlabel("tokens")
    ax.legend(fontsize=8)
    return png(fig, "tokens per role")


def nested(value: Any) -> str:
    """Any JSON value as HTML: dicts as two-column tables, recursively."""
    if isinstance(value, dict):
        return table([], [[esc(key), nested(item)] for key, item in value.items()], "small")
    if isinstance(value, list):
        return esc(", ".join(str(item) for item in value))
    return fmt(value)


def phase_table(phases: dict) -> str:
    rows = [[esc(phase), fmt(seconds)] for phase, seconds in phases.items()]
    total = sum(s for s in phases.values() if isinstance(s, (int, float)))
    return "<h3>Time per phase</h3>" + table(["phase", "seconds"], rows + [["<b>total</b>", fmt(float(total))]])


def tokens_section(data: RunFiles) -> str:
    usage = {role: u for role, u in (data.run.get("token_usage") or {}).items() if isinstance(u, dict)}
    parts = []
    if usage:
        rows = [[esc(role), *(fmt(u.get(c)) for c in TOKEN_COLUMNS)] for role, u in usage.items()]
        rows.append(["<b>total</b>", *(fmt(token_total(usage, c)) for c in TOKEN_COLUMNS)])
        parts += [table(["role", *TOKEN_COLUMNS], rows), token_plot(usage)]
    else:
        parts.append(note("run.json has no token usage."))
    cost = data.run.get("cost")
    parts.append("<h3>Cost</h3>" + nested(cost) if cost else note("run.json has no cost estimate."))
    phases = data.run.get("phase_seconds")
    parts.append(phase_table(phases) if isinstance(phases, dict) and phases else note("run.json has no phase times."))
    return "".join(parts)


# --- page --------------------------------------------------------------------------------------

SECTIONS = (  # (anchor, title, renderer); the header comes before them, untitled
    ("method", "Evolving method", method_section),
    ("optimization", "Optimization", optimization_section),
    ("failures", "Failure reasons", failure_section),
    ("lengths", "Instruction length per level", length_section),
    ("quality", "Quality", quality_section),
    ("lineages", "Lineages", lineage_section),
    ("tokens", "Tokens and cost", tokens_section),
)

STYLE = """
body { font-family: "Noto Sans CJK KR", "Noto Sans KR", "Apple SD Gothic Neo", "Malgun Gothic", sans-serif;
       max-width: 1240px; margin: 0 auto; padding: 0 20px 40px; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 4px; margin-top: 2em; }
nav a { margin-right: 14px; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; vertical-align: top; text-align: left; }
th { background: #f6f8fa; } table.small { font-size: 0.85em; }
.text, .diff { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa; border: 1px solid #e1e4e8;
               padding: 6px 8px; margin: 4px 0; font-size: 0.9em; }
.diff { font-family: "DejaVu Sans Mono", "Noto Sans Mono CJK KR", monospace; padding: 0; }
.diff div { padding: 0 8px; } .diff .add { background: #dafbe1; } .diff .del { background: #ffebe9; }
.diff .hunk { color: #0969da; background: #ddf4ff; } .diff .head { color: #57606a; font-weight: bold; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.note { color: #57606a; font-style: italic; } .decision { background: #fff8c5; padding: 4px 8px; }
.lineage { border-left: 4px solid #0969da; padding-left: 10px; margin: 12px 0; }
.lineage li.failed { color: #a40e26; } .stage { font-weight: bold; } .id { color: #57606a; font-size: 0.85em; }
img.plot { max-width: 100%; display: block; margin: 8px 0; }
details summary { cursor: pointer; color: #0969da; }
"""


def render(data: RunFiles) -> str:
    """The whole page as one HTML string."""
    # lang="en" for the English page chrome: under lang="ko" the CJK font draws Latin colons Korean-style.
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title, _ in SECTIONS) + "</nav>"
    body = "".join(f'<section id="{anchor}"><h2>{esc(title)}</h2>{renderer(data)}</section>'
                   for anchor, title, renderer in SECTIONS)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>autoevol report: {esc(data.name)}</title><style>{STYLE}</style></head>"
            f"<body>{header_section(data)}{nav}{body}</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Writes <run_dir>/report.html from the run's files and returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_NAME
    path.write_text(render(load_run(run_dir)), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write report.html, a self-contained HTML report of a finished run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (it holds run.json)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except NotARunDirectory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a read-only run directory
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
