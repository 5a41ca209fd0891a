"""autoevol: evolve instruction data with Auto Evol-Instruct (arXiv 2406.00770).

    python run.py                       # embedded local model, sample seed data
    python run.py --data-path my.jsonl --evol-llm-config deepseek
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from user_errors import ConfigError

from settings import RunSettings, scalar_type, setting_inputs, settings_from_inputs

def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


class HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's default after its help, unless it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in action.help:
            return action.help
        return action.help + " (default: %(default)s)"


def add_setting_flags(parser: argparse.ArgumentParser) -> dict:
    """One flag per RunSettings field, in its help group; returns the groups by name."""
    groups = {}
    for setting in setting_inputs():
        if setting.group not in groups:
            groups[setting.group] = parser.add_argument_group(setting.group)
        value_type = scalar_type(setting.annotation)
        if value_type is bool:  # `--flag` alone, or --flag 0|1
            options = dict(nargs="?", const=1, type=int, choices=(0, 1), default=int(setting.default))
        else:
            options = dict(type=value_type, default=setting.default)
        groups[setting.group].add_argument(*setting.flags, dest=setting.key, help=setting.help, **options)
    return groups


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evolve instruction data with an automatically optimized evolving method (Auto Evol-Instruct).",
        epilog="Real runs: --batch-size 10 --dev-size 50 --candidate-size 5 --max-steps 10 (the paper's sizes).",
        formatter_class=HelpFormatter,
    )
    out = add_setting_flags(parser)["output"]
    out.add_argument("--cache", default=None, help="LLM answer cache file, shareable across runs (default: SAVE_PATH/llm_cache.sqlite)")
    out.add_argument("--overwrite", action="store_true", help="Delete what an earlier run wrote in SAVE_PATH (the files its manifest lists, nothing else) and start fresh")
    out.add_argument("--quiet", action="store_true", help="No progress bars or progress lines on stderr")
    out.add_argument("--dry-run", action="store_true",
                     help="Print the planned LLM calls per phase and estimated tokens and cost, then exit")
    out.add_argument("--allow-no-optimization", action="store_true",
                     help="Exit 0 even when no optimization step produced a usable candidate method")
    out.add_argument("--max-budget-tokens", type=positive, default=None,
                     help="Stop cleanly (resumable) once the run has used this many tokens in all")
    out.add_argument("--report-only", metavar="DIR", default=None,
                     help="Rebuild DIR/report.html from an existing run and exit")
    scale = parser.add_argument_group("scaling out (the output is the same for any N, so N may change on resume)")
    scale.add_argument("--workers", type=positive, default=1,
                       help="Ray workers that stream generation, lineages sharded by root id; 1 streams in this process")
    scale.add_argument("--ray-address", metavar="ADDR", default=None,
                       help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one with "
                            "--workers CPUs for this run")
    pub = parser.add_argument_group("dataset folder and publishing")
    pub.add_argument("--license", default=None,
                     help="Licence id for the dataset card, e.g. apache-2.0 or cc-by-4.0 (default: stated as unknown)")
    pub.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                     help="Upload SAVE_PATH/dataset/ to this Hugging Face dataset repo (token: HF_TOKEN or MY_HF_TOKEN)")
    pub.add_argument("--private", action="store_true", help="Create the --push-to-hub repo as private")
    pub.add_argument("--publish-only", metavar="DIR", default=None,
                     help="Rebuild DIR/dataset/ from an existing run (and push it with --push-to-hub), then exit")
    return parser


def prepare_directory(settings: RunSettings, overwrite: bool, seeds=None, cache: str | None = None) -> None:
    """Refuse to mix two different runs in one directory, or to touch a user's file; --overwrite starts fresh.

    See record_store.run_directory: the same check runs for every way into the graph.
    """
    from record_store.run_directory import prepare_run_directory

    if note := prepare_run_directory(settings, overwrite, seeds, cache):
        print(note, file=sys.stderr)


# Every loop here is bounded by max_steps, loop and the data; the limit only guards
# against a bug: a run takes a few supersteps per optimization step and per level.
RECURSION_LIMIT = 1_000_000


def rate_with_interval(score: dict) -> str:
    """0.333 [0.097-0.700]; the interval is left out for a run.json written before it existed."""
    interval = score.get("failure_rate_interval")
    return f"{score['failure_rate']:.3f}" + (f" [{interval[0]:.3f}-{interval[1]:.3f}]" if interval else "")


def print_summary(values: dict, settings: RunSettings) -> None:
    from nodes.selector import savings_line, within_noise

    run = json.loads((Path(settings.save_path) / "run.json").read_text(encoding="utf-8"))
    e0, final = run["e0_score"], run["final_score"]
    print(f"rows in: {run['counts']['rows_in']}, generation set: {run['counts']['generation_set']}")
    for level, counts in sorted(run["counts"]["levels"].items(), key=lambda kv: int(kv[0])):
        if level != "0":
            print(f"level {level}: {counts['parents']} in, {counts['records']} records, {counts['failures']} failures")
    lenient = sum(run["counts"]["lenient_parses_per_level"].values())
    if lenient:
        print(f"{lenient} of the records were parsed leniently (no final marker in the model's answer)")
    if e0:
        noise = ""
        if final["method_id"] != e0["method_id"] and within_noise(final, e0):
            noise = f"; the difference is within noise for a dev set of {e0['dev_size']}"
        print(f"dev failure rate (95% interval): e0 {rate_with_interval(e0)} -> {run['method_id']} "
              f"{rate_with_interval(final)} ({run['stop_reason']}{noise})")
        if final.get("held_out"):
            print(f"{run['method_id']} was adopted on {final['selection_estimate']['dev_size']} dev items "
                  f"({final['selection_estimate']['failure_rate']:.3f} there); on the other "
                  f"{final['held_out']['dev_size']}: {rate_with_interval(final['held_out'])}")
    if run.get("selection", {}).get("candidate_items_full"):
        print(savings_line(run["selection"]))
    if note := (run.get("optimization") or {}).get("note"):
        print(note)
    print(f"method: {run['method_id']}; output in {settings.save_path}/ (records.jsonl, failures.jsonl, method.txt, "
          "run.json, dataset/)")


def no_usable_candidate(settings: RunSettings) -> bool:
    run = json.loads((Path(settings.save_path) / "run.json").read_text(encoding="utf-8"))
    return bool((run.get("optimization") or {}).get("no_usable_candidate"))


async def checkpoint_writes_landed(saver, timeout: float = 30.0) -> None:
    """Wait for the checkpoint writes a failed superstep leaves running (its branches' results and errors).

    LangGraph does not await them before `astream` raises; closing the connection under one leaves
    its transaction open, which locks the next invocation in this process out of the file.
    """
    prefix = f"{type(saver).__name__}."
    writes = [task for task in asyncio.all_tasks()
              if getattr(task.get_coro(), "__qualname__", "").startswith(prefix)]
    if writes:
        await asyncio.wait(writes, timeout=timeout)


async def execute(settings: RunSettings, embedded_url: str | None = None, cache: str | None = None,
                  models: dict | None = None, quiet: bool = False, max_budget_tokens: int | None = None,
                  workers: int = 1, ray_address: str | None = None, seeds=None) -> dict:
    """Run (or resume) the workflow; `models` swaps in chat models by role, for tests.

    The save path is checked first, as for every way into the graph; `seeds`, the checked seed set
    when the caller has read it, saves reading the data again.

    With `workers` ≥ 2, generation levels stream on Ray (ray_backend.workers); the rest stays here.
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from graph.workflow import build_graph
    from run_report.progress import ProgressDisplay
    from resources import RunResources

    prepare_directory(settings, overwrite=False, seeds=seeds, cache=cache)
    resources = RunResources.build(settings, embedded_url=embedded_url, cache_path=cache, models=models,
                                   max_budget_tokens=max_budget_tokens)
    if workers > 1:
        from ray_backend.workers import RayWorkers

        resources.workers = RayWorkers(settings, workers, ray_address, embedded_url, cache)
        resources.workers.connect()
    display = ProgressDisplay(settings.max_steps, enabled=not quiet)
    async with AsyncSqliteSaver.from_conn_string(str(Path(settings.save_path) / "checkpoints.sqlite")) as saver:
        graph = build_graph(checkpointer=saver)
        config = {"configurable": {"thread_id": "run", "resources": resources},
                  "recursion_limit": RECURSION_LIMIT}
        try:
            snapshot = await graph.aget_state(config)
            # A node killed after its result was saved, before the next step began, has no `next`
            # but is still a pending task: the run is complete only when no task is left.
            pending = snapshot.next or tuple(task.name for task in snapshot.tasks)
            if snapshot.values and not pending:
                print("this run is already complete; use --overwrite to run it again", file=sys.stderr)
                return snapshot.values
            graph_input = None if pending else {}
            if pending:
                print(f"resuming the run in {settings.save_path} at {', '.join(pending)}", file=sys.stderr)
            async for chunk in graph.astream(graph_input, config, stream_mode=["updates", "custom"], subgraphs=True):
                display.handle(chunk)
            return (await graph.aget_state(config)).values
        finally:
            await checkpoint_writes_landed(saver)
            display.close()
            if resources.workers is not None:
                await resources.workers.close(resources)
            resources.save_usage()
            usage = resources.llms.usage_this_invocation().values()
            # Printed even with --quiet: it is the one figure that tells what a resume cost.
            print(f"LLM requests sent by this invocation: {sum(u.get('requests', 0) for u in usage)} "
                  f"({sum(u.get('cached_calls', 0) for u in usage)} answers from the cache)", file=sys.stderr)


def nothing_written(values: dict, settings: RunSettings) -> str | None:
    """The one line that says a run wrote no record at all (it is then no success), or None."""
    from collections import Counter

    directory = Path(settings.save_path)
    records = directory / "records.jsonl"
    if records.is_file() and records.stat().st_size:
        return None
    reasons = Counter()
    if (failures := directory / "failures.jsonl").is_file():
        with open(failures, encoding="utf-8") as handle:
            reasons.update(json.loads(line)["reason"] for line in handle if line.strip())
    top = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common(3)) or "none recorded"
    return (f"no record was written: {values.get('rows_in', 0)} rows in, all failed; see {failures} "
            f"(top reasons: {top})")


def dry_run(settings: RunSettings, seeds) -> None:
    """Print the plan of calls and tokens for the checked seed set; no server is started and no LLM is called."""
    from run_report.plan import format_plan, plan_run, validation_note
    from record_store.loading import generation_rows

    rows = generation_rows(seeds.rows, settings)
    print(format_plan(plan_run(settings, [row["instruction"] for row in rows])))
    if note := validation_note(settings):
        print(note)
    print(f"({len(rows)} instructions in the generation set; see run_report/plan.py for how tokens are estimated)")


def report_only(directory: str) -> None:
    from run_report.html_report import write_report

    if not (Path(directory) / "run.json").is_file():
        raise ConfigError(f"--report-only {directory}: no run.json there (is it a run directory?)")
    print(write_report(directory))


def push_token(args: argparse.Namespace) -> str | None:
    """The hub token when the run is to be pushed; checked before any work, like every other flag."""
    from publishing.hub import check_push_target

    if args.private and not args.push_to_hub:
        raise ConfigError("--private applies to the repo --push-to-hub creates: add --push-to-hub REPO_ID")
    return check_push_target(args.push_to_hub) if args.push_to_hub else None


def publish(run_dir: Path, args: argparse.Namespace, token: str | None, rebuild: bool) -> None:
    """Builds the dataset folder when asked to (or when it is missing or older than the publishing
    options), then pushes it when --push-to-hub is given."""
    from publishing.dataset_folder import DATASET_DIR, OPTIONS_FILE, build_dataset_folder
    from publishing.hub import PublishError, push_folder

    folder, card, options = run_dir / DATASET_DIR, run_dir / DATASET_DIR / "README.md", run_dir / OPTIONS_FILE
    if rebuild or not card.is_file() or (options.is_file() and options.stat().st_mtime > card.stat().st_mtime):
        try:
            built = build_dataset_folder(run_dir)
        except Exception as exc:  # disk full, a broken records file: the run itself is complete on disk
            raise PublishError(f"the dataset folder could not be built ({type(exc).__name__}: {exc}); the run's "
                               f"files are complete, retry with --publish-only {run_dir}".splitlines()[0]) from None
        print(f"dataset folder: {built}")
    if token is not None:
        print(f"pushed to the hub: {push_folder(folder, args.push_to_hub, args.private, token)}")


def publish_only(args: argparse.Namespace) -> None:
    from publishing.dataset_folder import save_options

    run_dir = Path(args.publish_only)
    if not (run_dir / "run.json").is_file():
        raise ConfigError(f"--publish-only {run_dir}: no run.json there (is it a finished run directory?)")
    token = push_token(args)
    save_options(run_dir, args.license, args.push_to_hub)
    publish(run_dir, args, token, rebuild=True)


def check_workers(args: argparse.Namespace) -> None:
    """--workers and --ray-address make sense together, and Ray is there to run them."""
    if args.ray_address and args.workers < 2:
        raise ConfigError("--ray-address runs generation on Ray workers: add --workers N (N of 2 or more)")
    if args.workers > 1:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--workers needs Ray: pip install -r requirements.txt (it pins ray)") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from run_checks import check_run
    from llm_access.client import FatalLLMError
    from llm_access.embedded_server import EmbeddedServerError, embedded_server
    from llm_access.probe import probe_run
    from publishing.dataset_folder import save_options
    from publishing.hub import PublishError
    from ray_backend import WorkerLost

    try:
        if args.report_only:
            report_only(args.report_only)
            return 0
        if args.publish_only:
            publish_only(args)
            return 0
        token = push_token(args)
        check_workers(args)
        settings, note = settings_from_inputs(vars(args))
        print(note, file=sys.stderr)
        # Every file, module and setting is checked before a server starts or an LLM is called.
        seeds = check_run(settings, args.cache)
        if args.dry_run:
            dry_run(settings, seeds)
            return 0
        prepare_directory(settings, args.overwrite, seeds, args.cache)
        save_options(Path(settings.save_path), args.license, args.push_to_hub)
        # A wrong URL, model or key stops here; the probes are noted in the run's usage journal as they are sent.
        probes = probe_run(settings.evol_llm, settings.optim_llm, save_path=settings.save_path)
        needs_server = settings.evol_llm.embedded or settings.optim_llm.embedded
        with embedded_server() if needs_server else contextlib.nullcontext() as server:
            if server:
                probe_run(settings.evol_llm, settings.optim_llm, server.base_url, into=probes, save_path=settings.save_path)
            values = asyncio.run(execute(settings, server.base_url if server else None, args.cache,
                                         quiet=args.quiet, max_budget_tokens=args.max_budget_tokens,
                                         workers=args.workers, ray_address=args.ray_address, seeds=seeds))
        print_summary(values, settings)
        if (empty := nothing_written(values, settings)) is not None:
            print(f"error: {empty}", file=sys.stderr)
            return 1
        # The embedded demo model cannot rewrite a method; for it the summary's note is enough.
        if not args.allow_no_optimization and not settings.optim_llm.embedded and no_usable_candidate(settings):
            print("error: no optimization happened (no usable candidate method in any step; see the summary and "
                  "run.json's history): fix the optim LLM, or pass --allow-no-optimization", file=sys.stderr)
            return 1
        publish(Path(settings.save_path), args, token, rebuild=False)
        return 0
    except (ConfigError, EmbeddedServerError, FatalLLMError, WorkerLost) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
