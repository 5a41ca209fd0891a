"""Run the failure checks on any file: `python -m failure_checks.classify --responses FILE.jsonl`.

`--responses FILE` reads lines with `response` (and optionally `instruction`); `--evolutions FILE`
reads lines with `original` and `evolved`. Each line is written to stdout as it came, with `failure`
added: the reason, or null. Rules only (rules/failure_rules.yaml, or `--rules PATH`); no LLM, no network.
A line that is not a JSON object, or lacks a field, ends the run with one line naming file and line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Literal

from failure_checks.markers import ParsedText
from failure_checks.rules import FailureRules
from user_errors import ConfigError

Kind = Literal["responses", "evolutions"]
Detector = Callable[[dict], "str | None"]

REQUIRED: dict[str, tuple[str, ...]] = {"responses": ("response",), "evolutions": ("original", "evolved")}
OPTIONAL_TEXT: dict[str, tuple[str, ...]] = {"responses": ("instruction",), "evolutions": ()}


def read_lines(path: Path, kind: Kind | None = None, labeled: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file, checked: each names its kind's text fields (and a label if `labeled`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from error
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(item, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        line_kind = kind or _kind_of_item(item)
        if line_kind is None:
            raise ConfigError(f"{path}:{number}: needs 'response' or 'original' and 'evolved'")
        for name in REQUIRED[line_kind]:
            if not isinstance(item.get(name), str):
                raise ConfigError(f"{path}:{number}: field '{name}' is missing or not a string")
        for name in OPTIONAL_TEXT[line_kind]:
            if item.get(name) is not None and not isinstance(item[name], str):
                raise ConfigError(f"{path}:{number}: field '{name}' must be a string")
        if labeled and not isinstance(item.get("label"), str):
            raise ConfigError(f"{path}:{number}: field 'label' is missing or not a string")
        items.append(item)
    return items


def _kind_of_item(item: dict) -> Kind | None:
    if "response" in item:
        return "responses"
    if "original" in item or "evolved" in item:
        return "evolutions"
    return None


def kind_of(path: Path, items: list[dict]) -> Kind:
    """The one kind of a labeled file's lines (a file mixes no kinds)."""
    kinds = {_kind_of_item(item) for item in items}
    if len(kinds) != 1:
        raise ConfigError(f"{path}: mixes responses and evolution pairs (or is empty)")
    return kinds.pop()


def rules_detector(rules: FailureRules, kind: Kind) -> Detector:
    """item -> the rules' failure reason or None."""
    if kind == "responses":
        def detect(item: dict) -> str | None:
            failure = rules.check_response(item["response"], item.get("instruction"))
            return failure.reason if failure else None
    else:
        def detect(item: dict) -> str | None:
            failure = rules.check_evolution(item["original"], ParsedText(item["evolved"]))
            return failure.reason if failure else None
    return detect


def judged(items: list[dict], kind: Kind, rules_detect: Detector, config_path: str,
           cache_path: Path | None = None) -> tuple[list[str | None], dict]:
    """Rules first, then the judge (an LLM from `config_path`) on each item the rules passed.

    Returns the reasons in item order and the judge's usage (calls, tokens). With `cache_path` the
    answers are cached there, as a run caches its calls.
    """
    import asyncio  # the LLM machinery is imported only when a judge is asked: rules-only stays light

    from llm_access.client import AnswerCache, ChatLLM
    from llm_access.config import load_llm_config
    from llm_tasks.judge import judge_evolution, judge_response

    llm = ChatLLM(load_llm_config(config_path, "evol"), cache=AnswerCache(cache_path) if cache_path else None)
    reasons = [rules_detect(item) for item in items]

    async def judge(item: dict) -> str | None:
        if kind == "responses":
            verdict = await judge_response(llm, item.get("instruction") or "", item["response"])
        else:
            verdict = await judge_evolution(llm, item["original"], item["evolved"])
        return verdict.reason if verdict else None

    async def judge_all() -> list[str | None]:
        return await asyncio.gather(*(judge(item) if reason is None else _same(reason)
                                      for item, reason in zip(items, reasons)))

    from llm_access.client import FatalLLMError

    try:
        return asyncio.run(judge_all()), dict(vars(llm.usage["judge"]))
    except FatalLLMError as error:
        raise ConfigError(f"--judge {config_path}: {error}") from None


async def _same(reason: str) -> str:
    return reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failure_checks.classify", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--responses", type=Path, metavar="FILE", help="JSONL lines with 'response' (and 'instruction')")
    source.add_argument("--evolutions", type=Path, metavar="FILE", help="JSONL lines with 'original' and 'evolved'")
    parser.add_argument("--rules", type=Path, default=None, help="a rules file (default: rules/failure_rules.yaml)")
    parser.add_argument("--judge", metavar="CONFIG", default=None,
                        help="also ask this LLM (a preset or config file) about each line the rules pass")
    args = parser.parse_args(argv)
    kind: Kind = "responses" if args.responses else "evolutions"
    path = args.responses or args.evolutions
    try:
        rules = FailureRules.load(args.rules)
        items = read_lines(path, kind)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detect = rules_detector(rules, kind)
    try:
        reasons = judged(items, kind, detect, args.judge)[0] if args.judge else [detect(item) for item in items]
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for item, reason in zip(items, reasons):
        sys.stdout.write(json.dumps({**item, "failure": reason}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
