"""The HTML run report: one self-contained page that shows what a finished run did.

It reads the files a run leaves in its directory (run.json, records.jsonl,
failures.jsonl, seeds.jsonl; see run_files) and writes <run_dir>/report.html. The
page carries everything inline (plots are base64 PNGs, the CSS is in a <style> tag)
so it can be mailed, archived or opened offline; nothing is fetched from the network.

The page is laid out by the Jinja2 templates in run_report/templates, one per section,
from the data sections.py computes. Autoescaping is on: every value from the run's
files is escaped, and non-ASCII text such as Korean stays as UTF-8.

Command line: `python -m run_report.report_cli RUN_DIR` (see report_cli).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from run_report import sections
from run_report.run_files import RunFiles, load_run

REPORT_NAME = "report.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def cell_text(value: Any) -> str:
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
        return ", ".join(f"{key}: {cell_text(item)}" for key, item in value.items()) or "-"
    return str(value)


def template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, finalize=lambda value: "" if value is None else value)  # a missing text shows as empty
    environment.filters["cell"] = cell_text
    return environment


def render(data: RunFiles) -> str:
    """The whole page as one HTML string."""
    page = template_environment().get_template("report.html.j2")
    return page.render(header=sections.header(data), sections=sections.sections(data)) + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Writes <run_dir>/report.html from the run's files and returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_NAME
    path.write_text(render(load_run(run_dir)), encoding="utf-8")
    return path
