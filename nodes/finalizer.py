"""Finalizer: writes method.txt and run.json, the run's account of itself, then the report and dataset folder."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from publishing.dataset_folder import build_dataset_folder
from run_report.metrics import level_metrics
from record_store.store import RecordStore, write_atomically
from run_report.html_report import write_report
from nodes.selector import selection_summary
from nodes.validator import race_rule
from resources import resources_from
from state import WorkflowState


def phase_seconds(phase_times: dict[str, list[float]]) -> dict[str, float]:
    """Wall time per phase from its [first start, last end] window."""
    return {phase: round(end - start, 2) for phase, (start, end) in phase_times.items()}


def accounting_holds(level_counts: dict[str, dict[str, int]]) -> bool:
    """Every parent of every level (and every item a diversity step added) became a record or a
    failure, and every record of a level is a parent of the next."""
    levels = sorted(level_counts, key=int)
    for previous, current in zip(levels, levels[1:]):
        if level_counts[current]["parents"] != level_counts[previous]["records"]:
            return False
    return all(c["parents"] + c.get("added", 0) == c["records"] + c["failures"] + c.get("skipped", 0)
               for c in level_counts.values())


def quality_by_level(store: RecordStore, level_counts: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Diversity and complexity metrics of the seeds and each level, with failure rates by reason.

    The files are streamed line by line (level_metrics reads them again as it needs), never held in memory.
    """
    def lines_of(path: Path):
        return lambda: (item for _, item in store.iter_range(path, 0, None))

    metrics = level_metrics(lines_of(store.records_path), lines_of(store.seeds_path))
    failures: dict[str, Counter] = {}
    for _, failure in store.iter_range(store.failures_path, 0, None):
        failures.setdefault(str(failure["level"]), Counter())[failure["reason"]] += 1
    for level, reasons in failures.items():
        key = "seed" if level == "0" else level
        counts = level_counts.get(level, {})
        total = counts.get("parents", 0) + counts.get("added", 0)
        if key in metrics:
            metrics[key]["failure_rates"] = {r: round(n / max(1, total), 4) for r, n in reasons.most_common()}
    return metrics


def optimization_outcome(history: list[dict], optimizing: bool) -> dict:
    """Whether the optimization phase produced any usable candidate; when it was asked for and none was,
    a note says so (the data was then evolved with the method the run started from)."""
    candidates = [c for step in history for c in step.get("candidates") or []]
    usable = sum(1 for c in candidates if c.get("status") == "usable")
    failed_analyses = sum(1 for step in history for f in step.get("feedback") or [] if f.get("error"))
    outcome = {"steps": len(history), "candidates": len(candidates), "usable_candidates": usable,
               "failed_analyses": failed_analyses, "no_usable_candidate": optimizing and usable == 0}
    if outcome["no_usable_candidate"]:
        why = Counter((c.get("rejection") or {}).get("reason") if c.get("status") == "rejected" else c.get("parse")
                      for c in candidates)
        reasons = ", ".join(f"{reason} {n}" for reason, n in why.most_common()) or "none was produced"
        outcome["note"] = (f"no optimization happened: none of the {len(candidates)} candidate methods of "
                           f"{len(history)} step(s) was usable ({reasons}; {failed_analyses} analyses failed), "
                           "so the data was evolved with the initial method")
    return outcome


def run_summary(state: WorkflowState, config: RunnableConfig) -> dict:
    """The content of run.json; settings carry env variable names, never key values."""
    resources = resources_from(config)
    return {
        "settings": resources.settings.model_dump(mode="json"),
        "method_id": state.method_id,
        "method": state.method,
        "e0_score": state.e0_score,
        "final_score": state.method_score,
        "stop_reason": state.stop_reason,
        "history": state.history,
        "optimization": optimization_outcome(state.history, optimizing=bool(resources.settings.max_steps)
                                             and not resources.settings.method_file),
        "selection": selection_summary(state.history, race_rule(resources.settings).selection),
        "counts": {
            "rows_in": state.rows_in,
            "generation_set": state.seed_count,
            "levels": state.level_counts,
            "accounting_holds": accounting_holds(state.level_counts),
            **resources.store.count_by_level(),
        },
        "quality": quality_by_level(resources.store, state.level_counts),
        "token_usage": resources.llms.usage_by_role(),
        "cost": resources.llms.cost(),
        "endpoints": resources.llms.endpoint_stats(),
        "phase_seconds": phase_seconds(state.phase_times),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


async def finalize(state: WorkflowState, config: RunnableConfig) -> dict:
    """Reads the whole state; writes method.txt, run.json, report.html and dataset/ into the save directory."""
    directory = Path(resources_from(config).settings.save_path)
    write_atomically(directory / "method.txt", state.method + "\n")
    write_atomically(directory / "run.json", json.dumps(run_summary(state, config), ensure_ascii=False, indent=2))
    try:
        await asyncio.to_thread(write_report, directory)
    except Exception as exc:  # the data is safe in run.json; a plotting problem must not fail the run
        print(f"warning: report.html could not be written ({exc}); retry with --report-only", file=sys.stderr)
    try:
        await asyncio.to_thread(build_dataset_folder, directory)
    except Exception as exc:  # likewise: the run's files are complete, the folder can be rebuilt from them
        print(f"warning: dataset/ could not be written ({exc}); retry with --publish-only {directory}", file=sys.stderr)
    return {}

