"""Progress lines on stderr, derived from the graph's streamed updates."""

from __future__ import annotations

import sys


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _describe(node: str, values: dict) -> str | None:
    if node == "load_data":
        return (f"data: {values['rows_in']} rows, {values['seed_count']} in the generation set, "
                f"{len(values['train'])} train, {len(values['dev'])} dev")
    if node == "evolver":
        stopped = sum(1 for t in values["trajectories"] if t["failure"])
        return f"optimization: evolved {len(values['trajectories'])} trajectories ({stopped} stopped early)"
    if node == "validator":
        score = values["scores"][0]
        return f"  {score['method_id']}: dev failure rate {score['failure_rate']:.3f} {score['failures_by_reason']}"
    if node == "selector":
        record = values["history"][-1]
        return f"step {record['step']}: kept {record['kept_method_id']}: {record['decision']}"
    if node == "respond":
        level = max(values["level_counts"], key=int)
        counts = values["level_counts"][level]
        return f"  level {level}: {counts['parents']} parents read, {counts['records']} records, {counts['failures']} failures"
    return None


def report_progress(event: tuple) -> None:
    """One line per trajectory batch, validation, step decision and generation chunk."""
    _namespace, update = event
    for node, values in (update or {}).items():
        if isinstance(values, dict) and (line := _describe(node, values)):
            _say(line)
