"""The report's matplotlib figures, each returned as an inline PNG so the page needs no image files.

Plots hold only ids, reasons and numbers: matplotlib may lack a Korean font, while the
browser shows Korean text in the HTML with the CJK fonts in the page's CSS.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI; must precede any pyplot import
from matplotlib.figure import Figure  # noqa: E402  (after the backend choice)
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


@dataclass(frozen=True)
class Plot:
    """A figure rendered for an <img> tag."""

    alt: str
    """What the figure shows, for the alt text."""
    src: str
    """The PNG as a data: URI."""


def png(fig: Figure, alt: str) -> Plot:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return Plot(alt, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))


def optimization_plot(points: Sequence[tuple[Any, Any, float]], kept: Sequence[tuple[Any, float]],
                      steps: Sequence[int], intervals: Sequence[Sequence[float] | None] = ()) -> Plot:
    """Scored candidates as (step, method id, rate), the kept method's line as (step, rate), ticks at steps.

    `intervals` (issue 14): each point's Wilson 95% interval [low, high], drawn as an error bar when known.
    """
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    ax.scatter([x for x, _, _ in points], [y for _, _, y in points], color="tab:blue", alpha=0.7, label="candidate")
    bars = [(x, y, interval) for (x, _, y), interval in zip(points, intervals) if interval]
    if bars:
        ax.errorbar([x for x, _, _ in bars], [y for _, y, _ in bars], fmt="none", ecolor="tab:blue", alpha=0.4,
                    capsize=3, yerr=[[y - i[0] for _, y, i in bars], [i[1] - y for _, y, i in bars]],
                    label="95% interval (Wilson)")
    for x, name, y in points:
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.plot([x for x, _ in kept], [y for _, y in kept], color="tab:red", marker="s", label="kept method")
    ax.set_xticks(list(steps))
    ax.set(xlabel="optimization step (0 = e0)", ylabel="dev failure rate", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return png(fig, "dev failure rate per optimization step")


def failure_plot(counts: dict[tuple[str, str], int]) -> Plot:
    """One bar per (stage, reason), coloured by stage."""
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


def length_plot(groups: dict[str, list[int]]) -> Plot:
    """A box per level of instruction lengths."""
    fig = Figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    ax.boxplot(list(groups.values()), tick_labels=[f"{name}\n(n={len(v)})" for name, v in groups.items()],
               showmeans=True)
    ax.set(xlabel="level", ylabel="instruction length (characters)")
    ax.grid(axis="y", alpha=0.3)
    return png(fig, "instruction length per level")


def quality_plot(quality: dict[str, dict]) -> Plot:
    """Two diversity metrics across levels."""
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


def token_plot(usage: dict[str, dict]) -> Plot:
    """Input and output tokens per role."""
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


def limit_plot(histories: dict[str, list]) -> Plot:
    """Each endpoint's concurrency limit over the run, as steps from one (unix time, limit) point to the next."""
    starts = [points[0][0] for points in histories.values() if points]
    origin = min(starts) if starts else 0.0
    fig = Figure(figsize=(9, 3.2))
    ax = fig.add_subplot()
    for name, points in histories.items():
        if points:
            ax.step([t - origin for t, _ in points], [limit for _, limit in points], where="post", label=name)
    ax.set(xlabel="seconds since the first request", ylabel="concurrency limit")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig, "concurrency limit per endpoint over time")
