"""The run report: a self-contained HTML page from a hand-made run directory, in Python and in real Chromium."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO
from run_report.html_report import write_report
from run_report.run_files import MAX_DEEP_LINEAGES, ancestry, contrasting_failures, load_run, spread

CHROMIUM = Path("/usr/bin/chromium")
SECTION_TITLES = ("Evolving method", "Optimization", "Failure reasons", "Instruction length per level", "Quality",
                  "Lineages", "Tokens and cost", "Endpoints")
KOREAN_SEED = "김치찌개를 맛있게 끓이는 순서를 알려 주세요."
KOREAN_LEVEL_2 = "김치찌개를 끓이는 순서를 재료 손질부터 단계별로, 각 단계의 시간과 함께 표로 정리해 주세요."
PLOT_PREFIX = '<img class="plot" alt='
INLINE_PNG = 'src="data:image/png;base64,'


def score(method_id: str, rate: float, reasons: dict[str, int]) -> dict:
    return {"method_id": method_id, "failure_rate": rate, "failures_by_reason": reasons, "complexity_gain": 1.5,
            "dev_size": 4, "lenient_parses": 1, "examples": []}


def candidate(method_id: str, parse: str, method_score: dict | None) -> dict:
    text = None if method_score is None else f"Method {method_id}: add one constraint.\nKeep the language."
    return {"method_id": method_id, "sample_index": 0, "text": text, "parse": parse, "raw": f"raw {method_id}",
            "score": method_score}


def full_run() -> dict:
    """run.json of two optimization steps with three candidates, one of them unparseable."""
    e0 = score("e0", 0.5, {"unchanged": 2})
    step1 = {"step": 1, "batch_row_ids": ["ko-01"], "trajectories": [],
             "feedback": [{"sample_index": 0, "text": "Stage 1 only copies the instruction.", "error": None}],
             "candidates": [candidate("s1c0", "marker", score("s1c0", 0.25, {"prompt_leak": 1})),
                            candidate("s1c1", "unparseable", None)],
             "incumbent": {"method_id": "e0", "score": e0}, "kept_method_id": "s1c0",
             "decision": "s1c0 failure rate 0.250 beats e0 0.500"}
    step2 = {"step": 2, "batch_row_ids": ["en-01"], "trajectories": [], "feedback": [],
             "candidates": [candidate("s2c0", "lenient", score("s2c0", 0.5, {"runaway_length": 2}))],
             "incumbent": {"method_id": "s1c0", "score": score("s1c0", 0.25, {"prompt_leak": 1})},
             "kept_method_id": "s1c0", "decision": "no candidate beats s1c0 0.250"}
    levels = {"seed": 2, "1": 2, "2": 2}
    quality = {name: {"count": n, "mean_length": 40.0, "median_length": 38.0, "growth_over_parent": None
                      if name == "seed" else 1.4, "distinct_1_chars": 0.3, "distinct_2_chars": 0.6 + 0.1 * i,
                      "pairwise_jaccard_distance": 0.8, "hangul_ratio": 0.5, "hangul_ratio_drift": None}
               for i, (name, n) in enumerate(levels.items())}
    quality["1"]["failure_rates"] = {"prompt_leak": 0.5}
    return {
        "settings": {"save_path": "x", "loop": 2, "method_file": None, "evol_llm": {"model": "tiny"},
                     "optim_llm": {"model": "tiny"}},
        "method_id": "s1c0", "method": "Method s1c0: add one constraint.\nKeep the language.",
        "e0_score": e0, "final_score": score("s1c0", 0.25, {"prompt_leak": 1}),
        "stop_reason": "reached max_steps (2)", "history": [step1, step2],
        "counts": {"rows_in": 3, "levels": {"0": {"parents": 3, "records": 3, "failures": 0}}, "accounting_holds": True},
        "quality": quality,
        "token_usage": {"evolve": {"calls": 10, "cached_calls": 2, "input_tokens": 900, "output_tokens": 400},
                        "respond": {"calls": 4, "failed_calls": 1, "requests": 5, "input_tokens": 300,
                                    "output_tokens": 700}},
        "cost": {"total_usd": 0.12, "by_role": {"evolve": 0.1, "respond": 0.02}},
        "phase_seconds": {"load": 0.5, "optimization": 12.0, "generation": 8.25},
        "endpoints": [{"llm": "evol", "base_url": "http://gpu-a:8000/v1", "cap": 16, "limit": 13, "down": False,
                       "requests": 530, "succeeded": 500, "errors": {"http_429": 30}, "input_tokens": 9000,
                       "output_tokens": 4000, "latency_seconds": {"p50": 1.25, "p90": 3.5, "p99": 9.75},
                       "limit_history": [[1764000000.0, 16], [1764000003.5, 12], [1764000010.0, 13]]}],
        "finished_at": "2026-11-25T10:05:00+0000",
    }


def seeds() -> list[dict]:
    rows = [("ko-01", KOREAN_SEED), ("en-01", "Explain how a rainbow forms."), ("en-02", "Write a haiku about snow.")]
    return [{"id": i, "root_id": i, "parent_id": None, "level": 0, "instruction": t, "original": t} for i, t in rows]


def record(root: str, level: int, instruction: str) -> dict:
    parent = root if level == 1 else f"{root}.L{level - 1}"
    return {"id": f"{root}.L{level}", "root_id": root, "parent_id": parent, "level": level, "instruction": instruction,
            "response": f"answer to {root} level {level}", "original": root, "method_id": "s1c0", "parse": "marker"}


def records() -> list[dict]:
    return [record("ko-01", 1, "김치찌개를 끓이는 순서를 재료 손질부터 단계별로 알려 주세요."),
            record("ko-01", 2, KOREAN_LEVEL_2),
            record("en-01", 1, "Explain how a rainbow forms, naming <the> three optical effects & their order."),
            record("en-01", 2, "Explain how a double rainbow forms, naming three optical effects in order.")]


def failures() -> list[dict]:
    rows = [("en-02", 1, "evolve", "prompt_leak", 'contains "rewritten instruction"'),
            ("ko-01", 3, "evolve", "language_changed", "hangul ratio 0.91 -> 0.00"),
            ("en-01", 3, "respond", "empty_response", "no text")]
    parent = {1: "{}", 3: "{}.L2"}
    return [{"id": f"{root}.L{level}", "root_id": root, "parent_id": parent[level].format(root), "level": level,
             "stage": stage, "reason": reason, "detail": detail, "instruction": "rejected text", "raw": "raw answer"}
            for root, level, stage, reason, detail in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def make_run_dir(path: Path, run: dict, with_rows: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps(run, ensure_ascii=False), encoding="utf-8")
    write_jsonl(path / "seeds.jsonl", seeds() if with_rows else [])
    write_jsonl(path / "records.jsonl", records() if with_rows else [])
    write_jsonl(path / "failures.jsonl", failures() if with_rows else [])
    return path


class TagCollector(HTMLParser):
    """Every start tag with its attributes, to check what the page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def report_html(tmp_path) -> str:
    return write_report(make_run_dir(tmp_path / "run", full_run())).read_text(encoding="utf-8")


def test_write_report_returns_the_report_path(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", full_run())
    assert write_report(str(run_dir)) == run_dir / "report.html"


def test_page_loads_nothing_from_outside(report_html):
    collector = TagCollector()
    collector.feed(report_html)
    tag_names = {tag for tag, _ in collector.tags}
    assert "script" not in tag_names and "link" not in tag_names and "iframe" not in tag_names
    for tag, attrs in collector.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, name, value)
            assert not value or value.startswith(("data:image/png;base64,", "#")), (tag, name, value)
    assert "@import" not in report_html and "url(" not in report_html


def test_page_has_utf8_cjk_fonts_and_inline_plots(report_html):
    assert '<meta charset="utf-8">' in report_html
    assert '"Noto Sans CJK KR", "Noto Sans KR"' in report_html and "sans-serif" in report_html
    assert report_html.count(INLINE_PNG) >= 5
    assert report_html.count(PLOT_PREFIX) == report_html.count(INLINE_PNG)


def test_sections_come_in_order(report_html):
    positions = [report_html.index(f"<h2>{title}</h2>") for title in SECTION_TITLES]
    assert positions == sorted(positions)
    assert report_html.index("Run report: run") < positions[0]


def test_korean_text_is_unescaped_and_markup_in_data_is_escaped(report_html):
    assert KOREAN_SEED in report_html and KOREAN_LEVEL_2 in report_html
    assert "naming &lt;the&gt; three optical effects &amp; their order" in report_html


def test_markup_in_run_json_is_escaped_everywhere(tmp_path):
    run = full_run()
    run["stop_reason"] = "<script>alert(1)</script>"
    run["method_id"] = 'm"1'
    run["token_usage"]["<b>x</b>"] = {"calls": 1}
    html_text = write_report(make_run_dir(tmp_path / "run", run)).read_text(encoding="utf-8")
    assert "<script>" not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<b>x</b>" not in html_text and "&lt;b&gt;x&lt;/b&gt;" in html_text
    assert 'm"1' not in html_text and "m&#34;1" in html_text


def test_header_and_method_diff(report_html):
    assert "reached max_steps (2)" in report_html and "2026-11-25T10:05:00+0000" in report_html
    assert "e0 50.0% → final 25.0%" in report_html
    assert "Diff e0 &rarr; s1c0" in report_html
    assert '<div class="add">+Method s1c0: add one constraint.</div>' in report_html
    assert '<div class="del">-You are an instruction rewriter.' in report_html


def test_optimization_lists_every_candidate_and_decision(report_html):
    for method_id in ("s1c0", "s1c1", "s2c0"):
        assert method_id in report_html
    assert "Candidates without a score" in report_html and "unparseable" in report_html
    assert "no candidate beats s1c0 0.250" in report_html
    assert "prompt_leak: 1" in report_html


def test_failures_quality_lineages_and_tokens(report_html):
    for reason in ("prompt_leak", "language_changed", "empty_response"):
        assert reason in report_html
    assert "failed at level 3 (evolve): language_changed" in report_html
    assert "Lineages reaching level 2" in report_html and "<summary>response</summary>" in report_html
    assert "pairwise_<wbr>jaccard_<wbr>distance" in report_html and "prompt_leak: 0.500" in report_html
    assert "<td><b>total</b></td><td>14</td><td>2</td><td>1</td><td>5</td><td>1,200</td><td>1,100</td>" in report_html
    assert "total_usd" in report_html and "20.750" in report_html


def test_endpoints_show_counters_percentiles_and_the_limit_plot(report_html):
    section = report_html[report_html.index('<section id="endpoints">'):]
    assert "http://gpu-a:8000/v1" in section and "http_429: 30" in section and "9.750" in section
    assert 'alt="concurrency limit per endpoint over time"' in section


def test_a_run_without_history_e0_quality_or_rows_still_renders(tmp_path):
    run = full_run()
    for key in ("history", "quality", "cost", "token_usage", "final_score", "counts", "endpoints"):
        run.pop(key)
    run["e0_score"] = None
    html_text = write_report(make_run_dir(tmp_path / "bare", run, with_rows=False)).read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html_text
    assert "not measured: no e0 score and no final score" in html_text
    assert "No optimization history" in html_text
    assert "run.json has no quality metrics" in html_text
    assert "run.json has no endpoint statistics" in html_text
    assert "no item failed" in html_text and "no instruction survived" in html_text
    assert INLINE_PNG not in html_text


def test_unreadable_lines_are_skipped_and_counted(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", full_run())
    with (run_dir / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "en-02.L1", "instruc')  # a run killed mid-write leaves a truncated last line
    html_text = write_report(run_dir).read_text(encoding="utf-8")
    assert "records.jsonl: 1 unreadable line(s) skipped" in html_text
    assert KOREAN_LEVEL_2 in html_text


# --- streamed reading ----------------------------------------------------------------------


def test_a_lineage_is_followed_by_parent_id_across_roots_and_generations(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", full_run())
    breadth = {"id": "en-01.L1.B", "root_id": "en-01.L1.B", "parent_id": "en-01.L1", "level": 1,
               "instruction": "A new lineage inspired by the rainbow one.", "lineage": "breadth"}
    deep = [{"id": "en-01.L1.B.L2", "root_id": "en-01.L1.B", "parent_id": "en-01.L1.B", "level": 2,
             "instruction": "Its level 2."},
            {"id": "en-01.L1.B.L3", "root_id": "en-01.L1.B", "parent_id": "en-01.L1.B.L2", "level": 3,
             "instruction": "Its level 3, the only record that deep."}]
    write_jsonl(run_dir / "records.jsonl", [*records(), breadth, *deep])
    html_text = write_report(run_dir).read_text(encoding="utf-8")
    lineage = html_text[html_text.index("Lineages reaching level 3"):]
    ids = ["en-01", "en-01.L1", "en-01.L1.B", "en-01.L1.B.L2", "en-01.L1.B.L3"]
    positions = [lineage.index(f'<span class="id">{row_id}</span>') for row_id in ids]
    assert positions == sorted(positions)  # root first, five generations over two roots
    assert "level 1 (new lineage, breadth)" in lineage


def test_a_line_separator_inside_a_text_does_not_split_the_line(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", full_run())
    rows = records()
    rows[1]["instruction"] = "김치찌개를\u2028끓이는 순서\u0085표로 정리해 주세요."
    write_jsonl(run_dir / "records.jsonl", rows)
    html_text = write_report(run_dir).read_text(encoding="utf-8")
    assert "unreadable" not in html_text
    assert "김치찌개를\u2028끓이는 순서" in html_text


def test_streamed_summaries_match_the_whole_files(tmp_path):
    """The lineages and failures load_run picks while streaming are those the whole lists give."""
    rng = random.Random(7)
    roots = [f"r{i}" for i in range(30)]
    seed_rows = [{"id": root, "root_id": root, "parent_id": None, "level": 0, "instruction": f"seed {root}"}
                 for root in roots]
    record_rows, failure_rows = [], []
    for level in (1, 2, 3):
        for root in roots:
            row = {"id": f"{root}.L{level}", "root_id": root, "level": level, "instruction": f"{root} at {level}",
                   "parent_id": root if level == 1 else f"{root}.L{level - 1}"}
            if rng.random() < 0.8:
                record_rows.append(row)
            else:
                failure_rows.append({**row, "stage": rng.choice(["evolve", "respond"]), "detail": "d",
                                     "reason": rng.choice(["unchanged", "prompt_leak", "empty_response"])})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(full_run()), encoding="utf-8")
    for name, rows in (("seeds", seed_rows), ("records", record_rows), ("failures", failure_rows)):
        write_jsonl(run_dir / f"{name}.jsonl", rows)

    data = load_run(run_dir)
    by_id = {str(row["id"]): row for row in [*seed_rows, *record_rows]}
    deepest = max(r["level"] for r in record_rows)
    ends = sorted((r for r in record_rows if r["level"] == deepest), key=lambda r: str(r["id"]))
    assert data.deepest == deepest and data.record_count == len(record_rows)
    assert data.lineage_ends == [r["id"] for r in spread(ends, MAX_DEEP_LINEAGES)]
    assert data.shown_failures == contrasting_failures(failure_rows)
    for end in data.lineage_ends:
        assert ancestry(end, data.lineage_rows) == ancestry(end, by_id)
    for failure in data.shown_failures:
        assert ancestry(failure["parent_id"], data.lineage_rows) == ancestry(failure["parent_id"], by_id)
    assert sum(len(v) for v in data.lengths.values()) == len(seed_rows) + len(record_rows)
    assert data.failure_count == len(failure_rows) and sum(data.failure_counts.values()) == len(failure_rows)


def run_report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "run_report.report_cli", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_cli_writes_the_report_and_prints_its_path(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", full_run())
    result = run_report_cli(str(run_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_dir / "report.html")
    assert KOREAN_LEVEL_2 in (run_dir / "report.html").read_text(encoding="utf-8")


def test_cli_on_a_directory_without_run_json_is_one_error_line(tmp_path):
    result = run_report_cli(str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path} has no run.json (is it a run directory?)"
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- real browser ------------------------------------------------------------------------


def chromium(tmp_path: Path, page: Path, *mode: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--window-size=1280,4000", *mode, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def plot_box(image) -> tuple[int, int, int, int] | None:
    """The bounding box of matplotlib's default blue (only plots use it), or None."""
    rgb = image.convert("RGB")
    pixels = rgb.load()
    width, height = rgb.size
    hits = [(x, y) for y in range(0, height, 2) for x in range(0, width, 2)
            if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], (31, 119, 180)))]
    if not hits:
        return None
    xs, ys = [x for x, _ in hits], [y for _, y in hits]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def test_chromium_renders_the_page(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (CI installs it with apt-get install -y chromium fonts-noto-cjk)")
    from PIL import Image

    page = write_report(make_run_dir(tmp_path / "run", full_run()))
    dom = chromium(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for title in SECTION_TITLES:
        assert title in dom.stdout
    assert dom.stdout.count(INLINE_PNG) >= 5 and KOREAN_LEVEL_2 in dom.stdout

    shot_path = tmp_path / "shot.png"
    shot = chromium(tmp_path, page, f"--screenshot={shot_path}")
    assert shot.returncode == 0 and shot_path.is_file(), shot.stderr[-2000:]
    image = Image.open(shot_path)
    assert image.width == 1280
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    box = plot_box(image)
    assert box is not None, "no plot colour in the screenshot"
    region = image.convert("L").crop(box)
    assert sum(1 for v in region.getdata() if v < 200) > 200, "the plot region is nearly blank"
