"""Progress lines on stderr, derived from the graph's streamed updates."""

from __future__ import annotations

import sys


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report_progress(event: tuple) -> None:
    """One line per finished optimization step, validation and generation level."""
    _namespace, update = event
    for node, values in (update or {}).items():
        if not isinstance(values, dict):
            continue
        if node == "load_data":
            _say(f"data: {values['rows_in']} rows, {values['seed_count']} in the generation set, "
                 f"{len(values['train'])} train, {len(values['dev'])} dev")
        elif node == "evolver":
            _say(f"step {values['batch'] and '…'}: evolved {len(values['trajectories'])} trajectories")
        elif node == "validator":
            for score in values["scores"]:
                _say(f"  validated {score['method_id']}: failure rate {score['failure_rate']:.3f} "
                     f"{dict(score['failures_by_reason'])}")
        elif node == "selector":
            record = values["history"][-1]
            _say(f"step {record['step']}: kept {record['kept_method_id']} — {record['decision']}")
        elif node == "respond":
            for level, counts in values.get("level_counts", {}).items():
                pass
        elif node == "finish_level":
            _say(f"level {max(values['level_spans'], key=int)} done")
