"""Progress on stderr: tqdm bars fed by the graph's custom stream events, and one line per decision.

Nodes emit the same events through LangGraph's stream writer (`resources.emit`), so
Studio and API users see progress too (stream mode "custom").
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def race_note(score: dict) -> str:
    """Where a candidate's validation stopped and its paired record against the kept method (issue 21)."""
    race = score.get("race")
    if not race:
        return ""
    return (f"; {race['verdict'].replace('_', ' ')} after {race['items']} of {race['pool']} items "
            f"({race['wins']} wins, {race['losses']} losses against the kept method, {score.get('calls', 0)} calls)")


class ProgressDisplay:
    """Bars for optimization steps, each method's dev validation and each generation level."""

    def __init__(self, max_steps: int, enabled: bool = True):
        self.enabled = enabled
        self.max_steps = max_steps
        self.bars: dict[str, tqdm] = {}
        self.started = time.monotonic()

    def _bar(self, key: str, description: str, total: int) -> tqdm:
        bar = self.bars.get(key)
        if bar is None:
            bar = tqdm(total=total, desc=description, file=sys.stderr, leave=True, dynamic_ncols=True,
                       disable=not self.enabled)
            self.bars[key] = bar
        return bar

    def say(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line, file=sys.stderr)

    def on_event(self, event: dict) -> None:
        """A custom stream event from a node."""
        kind = event.get("event")
        if kind == "validation":
            bar = self._bar(f"validation:{event['method_id']}", f"dev {event['method_id']}", event["total"])
            bar.n = event["done"]
            if event.get("verdict") not in (None, "complete"):
                bar.set_postfix_str(f"stopped: {event['verdict'].replace('_', ' ')}")
            bar.refresh()
        elif kind == "level":
            bar = self._bar(f"level:{event['level']}", f"level {event['level']}", event["total"])
            bar.total = max(bar.total or 0, event["total"])
            bar.n = event["done"]
            elapsed = max(1e-9, time.monotonic() - self.started)
            bar.set_postfix(failures=event["failures"], in_flight=event.get("in_flight", 0),
                            req_s=f"{event.get('requests', 0) / elapsed:.1f}",
                            tok_s=f"{event['output_tokens'] / elapsed:.0f}")
        elif kind == "step":
            bar = self._bar("steps", "optimization steps", self.max_steps)
            bar.n = event["step"]
            bar.refresh()

    def on_update(self, node: str, values: dict) -> None:
        """A node's state update; decisions get a line of their own."""
        if node == "load_data":
            self.say(f"data: {values['rows_in']} rows, {values['seed_count']} in the generation set, "
                     f"{len(values['train'])} train, {len(values['dev'])} dev")
        elif node == "optimizer" and values["candidates"][0]["status"] != "usable":
            candidate = values["candidates"][0]
            why = (candidate["rejection"] or {}).get("reason") or candidate["parse"]
            self.say(f"  {candidate['method_id']}: not validated, {candidate['status']} ({why})")
        elif node == "validator":
            score = values["scores"][0]
            self.say(f"  {score['method_id']}: dev failure rate {score['failure_rate']:.3f} {score['failures_by_reason']}"
                     + race_note(score))
        elif node == "later_rounds" and values.get("raced"):
            for score in values["raced"]:
                self.say(f"  {score['method_id']}: raced on past the heat ({score['race']['rounds']} rounds): dev "
                         f"failure rate {score['failure_rate']:.3f}" + race_note(score))
        elif node == "selector":
            record = values["history"][-1]
            self.say(f"step {record['step']}: kept {record['kept_method_id']}: {record['decision']}")

    def handle(self, chunk: tuple) -> None:
        """One item of `astream(stream_mode=["updates", "custom"], subgraphs=True)`."""
        _namespace, mode, data = chunk
        if mode == "custom" and isinstance(data, dict):
            self.on_event(data)
        elif mode == "updates":
            for node, values in (data or {}).items():
                if isinstance(values, dict):
                    self.on_update(node, values)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
