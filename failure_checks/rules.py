"""Rule-based checks that spot a failed evolution or a failed response.

Two questions are answered here, without calling any LLM:
- did evolving an instruction fail (`FailureRules.check_evolution`)?
- does the evol LLM's answer to an evolved instruction show that the
  instruction was bad (`FailureRules.check_response`, the paper's failure
  function F)?

The phrases and thresholds live in rules/failure_rules.yaml so users can read
and extend them; the YAML header documents the schema. This module only
knows the fixed checks (empty, too long, unchanged, language changed) and how
to run phrase rules.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from failure_checks import grammar
from failure_checks.grammar import EvolutionGrammar, ResponseGrammar, ScriptChecks
from failure_checks.markers import ParsedText

DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "rules" / "failure_rules.yaml"


@dataclass(frozen=True)
class Failure:
    reason: str  # a named reason, snake_case, e.g. "unchanged"
    detail: str = ""  # short human-readable why (the matched phrase, the ratio...)


# --- language ------------------------------------------------------------------


_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]")


def hangul_ratio(text: str) -> float:
    """Share of letters that are Hangul; digits, spaces and punctuation do not count."""
    # Counted with C-level helpers: this runs on every evolution and every record's metrics.
    letters = sum(map(str.isalpha, text))
    if not letters:
        return 0.0
    return len(_HANGUL.findall(text)) / letters


# --- character shingles ----------------------------------------------------------


def char_shingles(text: str, n: int = 3) -> set[str]:
    """Character n-grams of the lowercased text with whitespace runs read as one space and the ends stripped.

    Only wording then tells two texts apart, not case or spacing, and no tokenizer is needed, so Korean and
    English are treated alike. A text of at most n characters is one shingle, itself: a very short (even
    empty) text is still something, not an empty set equal to every other. The near-duplicate index and
    the pairwise-distance metric both use these, so "similar" means the same thing in both.
    """
    text = " ".join(text.lower().split())
    if len(text) <= n:
        return {text}
    return {text[i:i + n] for i in range(len(text) - n + 1)}


# --- text normalization for phrase matching ------------------------------------

_STRAIGHT_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})
_EDGE_MARKUP = set("\"'`*_#>~-¿¡")


def _normalize(text: str) -> str:
    # NFKC makes the fullwidth ？ a plain ?; case and spacing never matter.
    text = unicodedata.normalize("NFKC", text).translate(_STRAIGHT_QUOTES)
    return " ".join(text.split()).lower()


def _normalize_phrase(phrase: str) -> str:
    # Like _normalize, but edge spaces are kept so that "네 " differs from "네덜란드".
    phrase = unicodedata.normalize("NFKC", phrase).translate(_STRAIGHT_QUOTES)
    return re.sub(r"\s+", " ", phrase).lower()


def _is_edge_noise(char: str) -> bool:
    category = unicodedata.category(char)
    return (
        char.isspace()
        or char in _EDGE_MARKUP
        or category.startswith("S")  # emoji and other symbols
        or category in ("Pi", "Pf", "Cf", "Mn")  # curly quotes, joiners, variation selectors
    )


def _trim_edges(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def _has_content(text: str) -> bool:
    return any(char.isalnum() for char in text)


# --- phrase rules ----------------------------------------------------------------

_CONDITION_LABELS = {
    "starts_with": "starts with",
    "ends_with": "ends with",
    "contains": "contains",
    "regex": "matches",
}


def _phrase_pattern(phrase: str, condition: str) -> re.Pattern[str]:
    """Compile one phrase; Latin phrases match whole words only.

    Hangul phrases stay prefixes/substrings because Korean attaches endings
    directly to the word ("물론" should match "물론입니다").
    """
    phrase = _normalize_phrase(phrase)
    before = r"(?<![a-z0-9])" if re.match(r"[a-z0-9]", phrase) else ""
    after = r"(?![a-z0-9])" if re.search(r"[a-z0-9]$", phrase) else ""
    body = re.escape(phrase)
    if condition == "starts_with":
        return re.compile(f"^{body}{after}")
    if condition == "ends_with":
        return re.compile(f"{before}{body}$")
    return re.compile(f"{before}{body}{after}")


@dataclass(frozen=True)
class _MatchView:
    """The two views of a text that phrase rules look at."""

    full: str  # normalized
    trimmed: str  # normalized, with quotes/markdown/emoji trimmed from both edges

    @classmethod
    def of(cls, text: str) -> "_MatchView":
        full = _normalize(text)
        return cls(full, _trim_edges(full))


@dataclass(frozen=True)
class PhraseRule:
    reason: str
    description: str
    conditions: dict[str, tuple[re.Pattern[str], ...]]
    within_first: int | None = None
    max_length: int | None = None
    unless_in_original: bool = False

    def _search_space(self, condition: str, view: _MatchView) -> str:
        text = view.full if condition == "contains" else view.trimmed
        if condition in ("contains", "regex") and self.within_first:
            text = text[: self.within_first]
        return text

    def _first_hit(
        self, condition: str, view: _MatchView, original: _MatchView | None
    ) -> str | None:
        for pattern in self.conditions[condition]:
            hit = pattern.search(self._search_space(condition, view))
            if hit is None:
                continue
            in_original = original is not None and pattern.search(
                self._search_space(condition, original)
            )
            if in_original:
                continue  # the model did not introduce it
            return f'{_CONDITION_LABELS[condition]} "{hit.group(0)}"'
        return None

    def match(self, view: _MatchView, original: _MatchView | None = None) -> str | None:
        """Return a detail naming the matched phrases, or None if the rule does not apply."""
        if self.max_length is not None and len(view.full) > self.max_length:
            return None
        compare_to = original if self.unless_in_original else None
        hits = []
        for condition in self.conditions:
            hit = self._first_hit(condition, view, compare_to)
            if hit is None:
                return None
            hits.append(hit)
        return "; ".join(hits)


# --- thresholds ----------------------------------------------------------------


@dataclass(frozen=True)
class EvolutionThresholds:
    length_ratio_max: float = 4.0
    length_slack_chars: int = 400
    max_chars: int = 4000
    unchanged_similarity: float = 0.97
    language_min_letters: int = 10
    korean_source_min_ratio: float = 0.3
    korean_keep_factor: float = 0.5
    english_source_max_ratio: float = 0.05
    korean_target_min_ratio: float = 0.3
    degenerate_markup_share: float = 0.6
    degenerate_token_share: float = 0.5
    degenerate_min_tokens: int = 6


@dataclass(frozen=True)
class MethodThresholds:
    min_chars: int = 200
    min_length_ratio: float = 0.25
    near_copy_similarity: float = 0.995


# --- loading and validating the YAML ---------------------------------------------

_RULE_KEYS = {"reason", "description", "within_first", "max_length", "unless_in_original"} | set(
    _CONDITION_LABELS
)


class _RulesFile:
    """Validation context: every error names the file and the place in it."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, where: str, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(where, "expected a mapping")
        unknown = sorted(set(value) - allowed, key=str)
        if unknown:
            allowed_list = ", ".join(sorted(allowed))
            raise self.error(where, f"unknown key {unknown[0]!r} (allowed: {allowed_list})")
        return value


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read rules file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from error


def _load_thresholds(file: _RulesFile, section: str, raw: Any, kind: type):
    names = {field.name for field in fields(kind)}
    values = file.mapping(raw, f"{section}.thresholds", names)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            problem = f"expected a non-negative number, got {value!r}"
            raise file.error(f"{section}.thresholds.{name}", problem)
    return kind(**values)


def _phrase_list(file: _RulesFile, where: str, value: Any) -> list[str]:
    phrases = [value] if isinstance(value, str) else value
    if not isinstance(phrases, list) or not phrases:
        raise file.error(where, "expected a non-empty list of phrases")
    if not all(isinstance(phrase, str) and phrase.strip() for phrase in phrases):
        raise file.error(where, "every phrase must be a non-empty string")
    return phrases


def _compile_condition(file: _RulesFile, where: str, condition: str, phrases: list[str]) -> tuple:
    if condition != "regex":
        return tuple(_phrase_pattern(phrase, condition) for phrase in phrases)
    try:
        return tuple(re.compile(pattern, re.IGNORECASE) for pattern in phrases)
    except re.error as error:
        raise file.error(where, f"bad regex {error.pattern!r}: {error}") from error


def _positive_int(file: _RulesFile, where: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise file.error(where, f"{key} must be a positive whole number, got {value!r}")
    return value


def _rule_location(section: str, index: int, raw: Any) -> str:
    reason = raw.get("reason") if isinstance(raw, dict) else None
    return f"{section}[{index}]" + (f" ({reason})" if isinstance(reason, str) else "")


def _load_rule(file: _RulesFile, section: str, index: int, raw: Any) -> PhraseRule:
    where = _rule_location(section, index, raw)
    compares = section.startswith(("evolution", "method"))  # they have an original: the parent, the incumbent
    allowed = _RULE_KEYS if compares else _RULE_KEYS - {"unless_in_original"}
    raw = file.mapping(raw, where, allowed)
    reason = raw.get("reason")
    if not isinstance(reason, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", reason):
        raise file.error(where, "needs a snake_case 'reason'")
    conditions = {
        condition: _compile_condition(
            file, where, condition, _phrase_list(file, where, raw[condition])
        )
        for condition in _CONDITION_LABELS
        if condition in raw
    }
    if not conditions:
        raise file.error(where, "needs at least one of starts_with, ends_with, contains, regex")
    if not isinstance(raw.get("unless_in_original", False), bool):
        raise file.error(where, "unless_in_original must be true or false")
    return PhraseRule(
        reason=reason,
        description=str(raw.get("description", "")),
        conditions=conditions,
        within_first=_positive_int(file, where, "within_first", raw.get("within_first")),
        max_length=_positive_int(file, where, "max_length", raw.get("max_length")),
        unless_in_original=raw.get("unless_in_original", False),
    )


def _load_rules(file: _RulesFile, section: str, raw: Any) -> tuple[PhraseRule, ...]:
    """The phrase rules under `section` (e.g. "evolution.rules")."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise file.error(section, "expected a list of rules")
    return tuple(_load_rule(file, section, index, rule) for index, rule in enumerate(raw))


def _load_grammar(file: _RulesFile, section: str, raw: Any, kind: type):
    """A grammar dataclass from its YAML mapping: numbers, word lists and regex lists, by the default's type."""
    defaults = kind()
    values = file.mapping(raw, section, {f.name for f in fields(kind)})
    loaded = {}
    for name, value in values.items():
        where, default = f"{section}.{name}", getattr(defaults, name)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise file.error(where, f"expected a non-negative number, got {value!r}")
            loaded[name] = value
        elif isinstance(default, frozenset):
            loaded[name] = frozenset(str(word).lower() for word in _phrase_list(file, where, value))
        else:
            patterns = _phrase_list(file, where, value)
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise file.error(where, f"bad regex {pattern!r}: {error}") from error
            loaded[name] = grammar._compile(patterns)
    return kind(**loaded)


# --- the checks -------------------------------------------------------------------


_NOT_WORD = re.compile(r"[^\w\s]+")


def _squash(text: str) -> str:
    # A changed full stop or capital letter is no evolution.
    return " ".join(_NOT_WORD.sub(" ", text).split()).casefold()


# List markers at a line start: "1.", "2)", "(3)", "-", "*", "•", "가.", "①"; repeated for "- 2.".
_LIST_MARKER = re.compile(r"^[ \t]*(?:(?:[-*•·▪+]|\(?\d{1,3}[.)]|[가-하][.)]|[\u2460-\u2473])[ \t]*)+", re.MULTILINE)
_REPEATED_UNIT = re.compile(r"(.{1,4}?)\1+")


def _similarity(before: str, after: str, limit: float) -> float | None:
    """difflib's ratio of two squashed texts when it reaches `limit`, else None."""
    if before == after:
        return 1.0
    matcher = difflib.SequenceMatcher(None, before, after)
    # The cheap upper bounds rule most pairs out before the quadratic ratio().
    if matcher.real_quick_ratio() < limit or matcher.quick_ratio() < limit:
        return None
    similarity = matcher.ratio()
    return similarity if similarity >= limit else None


@dataclass(frozen=True)
class MethodGate:
    """The checks a candidate method passes before it may cost any validation call."""

    thresholds: MethodThresholds = MethodThresholds()
    required: tuple[PhraseRule, ...] = ()
    """Rules that must match; the first one that does not names the rejection."""
    rules: tuple[PhraseRule, ...] = ()
    """Rules that reject a method when they match (unless_in_original: the incumbent has it too)."""


class FailureRules:
    def __init__(
        self,
        thresholds: EvolutionThresholds,
        evolution_rules: tuple[PhraseRule, ...],
        response_rules: tuple[PhraseRule, ...],
        method_gate: MethodGate = MethodGate(),
        response_grammar: ResponseGrammar | None = None,
        evolution_grammar: EvolutionGrammar | None = None,
        script: ScriptChecks = ScriptChecks(),
    ):
        self.thresholds = thresholds
        self.evolution_rules = evolution_rules
        self.response_rules = response_rules
        self.method_gate = method_gate
        self.response_grammar = response_grammar  # None: phrase rules only
        self.evolution_grammar = evolution_grammar
        self.script = script

    @classmethod
    def load(cls, path: str | Path | None = None) -> "FailureRules":
        """Load rules from YAML; the default is rules/failure_rules.yaml next to this module."""
        file = _RulesFile(Path(path) if path is not None else DEFAULT_RULES_PATH)
        top = file.mapping(_read_yaml(file.path), "top level", {"evolution", "response", "method", "script"})
        evolution = file.mapping(top.get("evolution"), "evolution", {"thresholds", "rules", "grammar"})
        response = file.mapping(top.get("response"), "response", {"rules", "grammar"})
        method = file.mapping(top.get("method"), "method", {"thresholds", "required", "rules"})
        return cls(
            thresholds=_load_thresholds(file, "evolution", evolution.get("thresholds"), EvolutionThresholds),
            evolution_rules=_load_rules(file, "evolution.rules", evolution.get("rules")),
            response_rules=_load_rules(file, "response.rules", response.get("rules")),
            method_gate=MethodGate(
                thresholds=_load_thresholds(file, "method", method.get("thresholds"), MethodThresholds),
                required=_load_rules(file, "method.required", method.get("required")),
                rules=_load_rules(file, "method.rules", method.get("rules")),
            ),
            response_grammar=_load_grammar(file, "response.grammar", response["grammar"], ResponseGrammar)
            if response.get("grammar") is not None else None,
            evolution_grammar=_load_grammar(file, "evolution.grammar", evolution["grammar"], EvolutionGrammar)
            if evolution.get("grammar") is not None else None,
            script=_load_grammar(file, "script", top.get("script"), ScriptChecks),
        )

    def check_method(self, method: str, incumbent: str) -> Failure | None:
        """Why a candidate method must not be validated, or None: the gate in the rules file's `method:`."""
        gate, text = self.method_gate, method.strip()
        limit = max(gate.thresholds.min_chars, int(gate.thresholds.min_length_ratio * len(incumbent.strip())))
        if len(text) < limit:
            return Failure("too_short", f"{len(text)} chars (a usable method has at least {limit})")
        similarity = _similarity(_squash(incumbent), _squash(text), gate.thresholds.near_copy_similarity)
        if similarity is not None:
            return Failure("near_copy", f"similarity {similarity:.3f} to the incumbent")
        view = _MatchView.of(text)
        for rule in gate.required:
            if rule.match(view) is None:
                return Failure(rule.reason, rule.description or "a required phrase is missing")
        return _first_rule_failure(gate.rules, text, incumbent)

    def check_evolution(self, original: str, evolved: ParsedText, new_lineage: bool = False) -> Failure | None:
        """Return the first reason the evolution failed, or None if it looks fine.

        `new_lineage`: `evolved` is a new instruction written from `original` (in-breadth), which it need
        not keep the content of, so lost_content does not apply.
        """
        if evolved.text is None:
            return Failure("unparseable", "no evolved instruction found in the answer")
        text, original = evolved.text.strip(), original.strip()
        if not _has_content(text):
            return Failure("empty", "no letters or digits")
        return (
            self._broken_text(text)
            or self._degenerate(text)
            or self._runaway_length(original, text)
            or self._unchanged(original, text)
            or _first_rule_failure(self.evolution_rules, text, original)
            or self._evolution_grammar(original, text, grammar.answered_detail, "answered_instead")
            or self._evolution_grammar(original, text, grammar.copied_detail, "copied")
            or (None if new_lineage else
                self._evolution_grammar(original, text, grammar.lost_content_detail, "lost_content"))
            or self._language_changed(original, text)
            or self._mixed_script(original, text)
        )

    def check_response(self, response: str, instruction: str | None = None) -> Failure | None:
        """The paper's failure function F on the answer to an evolved instruction.

        With the instruction, script drift is judged against it (Han in the answer to a Han instruction
        is fine); without it, any Han or kana in the answer counts.
        """
        if not _has_content(response):
            return Failure("empty_response", "no letters or digits")
        found = self._broken_text(response) or _first_rule_failure(self.response_rules, response)
        if found is None and self.response_grammar is not None:
            hit = grammar.response_reason(response, self.response_grammar, instruction)
            found = Failure(hit[0], _clip(hit[1])) if hit else None
        return found or self._mixed_script(instruction, response)

    def _evolution_grammar(self, original: str, text: str, check, reason: str) -> Failure | None:
        if self.evolution_grammar is None:
            return None
        detail = check(original, text, self.evolution_grammar)
        return Failure(reason, detail) if detail else None

    def _broken_text(self, text: str) -> Failure | None:
        detail = grammar.broken_text_detail(text, self.script)
        return Failure("broken_text", detail) if detail else None

    def _mixed_script(self, source: str | None, text: str) -> Failure | None:
        detail = grammar.mixed_script_detail(source, text, self.script)
        return Failure("mixed_script", detail) if detail else None

    def _runaway_length(self, original: str, text: str) -> Failure | None:
        limits = self.thresholds
        with_slack = len(original) + limits.length_slack_chars
        relative = max(limits.length_ratio_max * len(original), with_slack)
        # An original already past max_chars may still grow by the slack.
        absolute = max(limits.max_chars, with_slack)
        limit = int(min(relative, absolute))
        if len(text) <= limit:
            return None
        return Failure("runaway_length", f"{len(text)} chars from {len(original)} (limit {limit})")

    def _degenerate(self, text: str) -> Failure | None:
        limits = self.thresholds
        visible = "".join(text.split())
        markup = sum(len(m.group(0).replace(" ", "")) for m in _LIST_MARKER.finditer(text))
        markup += sum(1 for char in _LIST_MARKER.sub("", text) if unicodedata.category(char).startswith("P"))
        if markup / len(visible) >= limits.degenerate_markup_share:
            return Failure("degenerate", f"{markup} of {len(visible)} characters are numbering, bullets or punctuation")
        tokens = _squash(text).split()
        if len(tokens) >= limits.degenerate_min_tokens:
            token, count = Counter(tokens).most_common(1)[0]
            if count / len(tokens) >= limits.degenerate_token_share:
                return Failure("degenerate", f'"{token}" is {count} of {len(tokens)} words')
        letters = "".join(tokens)
        if unit := _REPEATED_UNIT.fullmatch(letters):
            if len(letters) // len(unit.group(1)) >= limits.degenerate_min_tokens:
                return Failure("degenerate", f'"{unit.group(1)}" repeated')
        return None

    def _unchanged(self, original: str, text: str) -> Failure | None:
        before, after = _squash(original), _squash(text)
        if before == after:
            return Failure("unchanged", "identical apart from case, spacing and punctuation")
        similarity = _similarity(before, after, self.thresholds.unchanged_similarity)
        return Failure("unchanged", f"similarity {similarity:.3f}") if similarity is not None else None

    def _language_changed(self, original: str, text: str) -> Failure | None:
        limits = self.thresholds
        if sum(map(str.isalpha, original)) < limits.language_min_letters:
            return None  # numbers or symbols only: no language to keep
        before, after = hangul_ratio(original), hangul_ratio(text)
        korean_lost = (
            before >= limits.korean_source_min_ratio
            and after < before * limits.korean_keep_factor
        )
        korean_appeared = (
            before < limits.english_source_max_ratio
            and after > limits.korean_target_min_ratio
        )
        if korean_lost or korean_appeared:
            return Failure("language_changed", f"hangul ratio {before:.2f} -> {after:.2f}")
        return None


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_rule_failure(
    rules: tuple[PhraseRule, ...], text: str, original: str | None = None
) -> Failure | None:
    view = _MatchView.of(text)
    original_view = _MatchView.of(original) if original is not None else None
    for rule in rules:
        detail = rule.match(view, original_view)
        if detail is not None:
            return Failure(rule.reason, detail)
    return None
