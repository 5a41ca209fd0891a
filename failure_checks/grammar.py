"""Sentence-level checks: what an answer's own sentences do, and whether an evolved text is still an instruction.

A failed answer to an evolved instruction is short on substance and made of acts aimed at the user:
a question, a request ("입력해 주세요", "please paste"), an offer on a condition ("주시면 … 드릴게요",
"send it and I'll …"), or a statement of inability. A good answer may contain all of these too, but
inside quotes, code, list items or after paragraphs of content. So the answer is read as:

1. its own text: quoted passages ("…", “…”, 「…」, a Korean '…'), code blocks, inline code and
   blockquote lines are set aside; they count as substance, never as acts;
2. sentences (Kiwi for Korean, punctuation for English), each typed by its acts; list items, table
   rows and bold-labelled fields are content, not acts (a list of slogans that end in questions, a
   screen text "**안내문**: 이메일 주소를 입력해 주세요" are products);
3. substance = the characters of quoted text, list items and plain statements; an opening statement of
   at most `greeting_max_chars` ("좋은 질문입니다.", "Sure!") does not count;
4. only when substance is at most `substance_max_chars` do the acts decide: refusal, inability, a
   request for input, then any question or request (asking back).

Every word list and pattern lives in rules/failure_rules.yaml (`response.grammar`, `evolution.grammar`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from failure_checks import korean

# --- quotes, code, lists ----------------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_DOUBLE_QUOTED = re.compile(r"\"[^\"\n]{1,400}\"|“[^”\n]{1,400}”|「[^」\n]{1,400}」|『[^』\n]{1,400}』|‘[^’\n]{1,400}’")
# Straight single quotes are apostrophes in English ("don't"); in Korean they quote.
_KOREAN_SINGLE_QUOTED = re.compile(r"'[^'\n]{0,200}[가-힣][^'\n]{0,200}'")
_BLOCKQUOTE_LINE = re.compile(r"^[ \t]*>.*$", re.MULTILINE)
# List items, table rows and bold-labelled fields ("**제목**: …", "**Waiter:** …") are parts of a product.
_LIST_OR_TABLE_LINE = re.compile(
    r"^[ \t]*(?:[-*•·][ \t]|\d{1,3}[.)][ \t]|\||\*\*[^*\n]{1,30}\*\*[ \t]*[:：]|\*\*[^*\n]{1,30}[:：]\*\*)")
_MARKUP = re.compile(r"[*_#~]+")


def split_quoted(text: str) -> tuple[str, int]:
    """The answer's own text with quoted passages and code cut out, and how many characters were cut."""
    own = text
    for pattern in (_CODE_BLOCK, _INLINE_CODE, _BLOCKQUOTE_LINE, _DOUBLE_QUOTED, _KOREAN_SINGLE_QUOTED):
        own = pattern.sub(" ", own)
    cut = len("".join(text.split())) - len("".join(own.split()))
    return own, max(0, cut)


# --- configuration (rules/failure_rules.yaml) ----------------------------------------------------


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


@dataclass(frozen=True)
class ResponseGrammar:
    """`response.grammar` in the rules file; see its header for each key."""

    substance_max_chars: int = 120
    greeting_max_chars: int = 30
    inability_max_sentences: int = 3
    korean_question_endings: frozenset[str] = frozenset()
    korean_polite_endings: frozenset[str] = frozenset()
    korean_request_endings: frozenset[str] = frozenset()
    korean_request_auxiliaries: frozenset[str] = frozenset()
    korean_condition_endings: frozenset[str] = frozenset()
    korean_offer_verbs: frozenset[str] = frozenset()
    english_request: re.Pattern[str] | None = None
    english_conditional_offer: re.Pattern[str] | None = None
    inability: re.Pattern[str] | None = None
    ai_self: re.Pattern[str] | None = None
    refusal: re.Pattern[str] | None = None
    input_words: re.Pattern[str] | None = None
    missing_input: re.Pattern[str] | None = None
    question_products: re.Pattern[str] | None = None


@dataclass(frozen=True)
class SentenceActs:
    text: str
    question: bool = False
    request: bool = False
    conditional_offer: bool = False
    inability: bool = False
    refusal: bool = False
    missing_input: bool = False

    @property
    def addresses_user(self) -> bool:
        return self.question or self.request or self.conditional_offer

    @property
    def any(self) -> bool:
        return self.addresses_user or self.inability or self.refusal or self.missing_input


def _search(pattern: re.Pattern[str] | None, text: str) -> bool:
    return pattern is not None and pattern.search(text) is not None


def _korean_acts(sentence: korean.Sentence, grammar: ResponseGrammar) -> tuple[bool, bool, bool]:
    """(question, request, conditional offer) read from the morphemes of one Korean sentence."""
    morphemes = sentence.morphemes
    ending = sentence.final_ending()
    question = _ends_with_question_mark(sentence.text) or ending in grammar.korean_question_endings
    # An assistant asks its user in polite speech (-요, -ㅂ니까, honorific -시-); a plain "신기하지?" or
    # "먹었니?" speaks to someone else: a child in a story, a character in a dialogue.
    question = question and _polite(sentence, grammar)
    # An auxiliary 주 ("…해 주-") anywhere before the end: the speaker asks the listener to do something.
    helped = [i for i, m in enumerate(morphemes) if m.form in grammar.korean_request_auxiliaries
              and m.tag in ("VX", "VV")]
    request = bool(helped) and (question or ending in grammar.korean_request_endings)
    conditional_offer = any(
        m.tag == "EC" and m.form in grammar.korean_condition_endings and i > helped[0]
        and any(n.form in grammar.korean_offer_verbs for n in morphemes[i + 1:])
        for i, m in enumerate(morphemes)
    ) if helped else False
    if not request and ending in grammar.korean_request_endings and _search(grammar.input_words, sentence.text):
        request = True  # "코드를 붙여 넣으세요": a bare imperative that asks for input
    return question, request, conditional_offer


_QUESTION_END = re.compile(r"[?？][^\w?？]*$")


def _ends_with_question_mark(text: str) -> bool:
    """ "?" last, allowing closing quotes, brackets and emoji after it."""
    return _QUESTION_END.search(text) is not None


def _polite(sentence: korean.Sentence, grammar: ResponseGrammar) -> bool:
    """Polite speech: an ending in -요 (also as the particle after ᆫ가), a listed ending, or honorific -시-."""
    ending = sentence.final_ending()
    if ending is None:
        return True  # a fragment ("주의할 점은?"): no speech level to read
    forms = [m.form for m in sentence.morphemes]
    after_ending = forms[len(forms) - forms[::-1].index(ending):]
    honorific = any(m.tag == "EP" and m.form == "시" for m in sentence.morphemes)
    return ending.endswith("요") or ending in grammar.korean_polite_endings or "요" in after_ending or honorific


def _english_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?？])\s+", text) if s.strip()]


def _sentences_of(line: str) -> list[tuple[str, korean.Sentence | None]]:
    if korean.is_korean(line):
        return [(s.text, s) for s in korean.sentences(line)]
    return [(s, None) for s in _english_sentences(line)]


_STRAIGHT = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})


def sentence_acts(text: str, parsed: korean.Sentence | None, grammar: ResponseGrammar) -> SentenceActs:
    plain = _MARKUP.sub("", text).translate(_STRAIGHT).strip()
    if parsed is not None:
        question, request, offer = _korean_acts(parsed, grammar)
    else:
        question = _ends_with_question_mark(plain)
        request = _search(grammar.english_request, plain)
        offer = _search(grammar.english_conditional_offer, plain)
    return SentenceActs(plain, question, request, offer, _search(grammar.inability, plain),
                        _search(grammar.refusal, plain), _search(grammar.missing_input, plain))


@dataclass(frozen=True)
class AnswerReading:
    """An answer read sentence by sentence: its acts and how much substance it carries."""

    acts: list[SentenceActs] = field(default_factory=list)
    substance: int = 0
    sentences: int = 0  # the answer's own sentences, list items not counted


def read_answer(text: str, grammar: ResponseGrammar) -> AnswerReading:
    own, quoted = split_quoted(text)
    if not any(char.isalpha() for char in own):
        own, quoted = text, 0  # an answer that is one quotation is read as it is
    reading = AnswerReading(substance=quoted)
    substance, count = quoted, 0
    first = True
    for line in own.splitlines():
        if not line.strip():
            continue
        if _LIST_OR_TABLE_LINE.match(line):
            substance += len("".join(line.split()))
            first = False
            continue
        for sentence_text, parsed in _sentences_of(line):
            acts = sentence_acts(sentence_text, parsed, grammar)
            size = len("".join(acts.text.split()))
            count += 1
            if acts.any:
                reading.acts.append(acts)
            elif not (first and size <= grammar.greeting_max_chars):
                substance += size
            first = False
    return AnswerReading(reading.acts, substance, count)


def response_reason(text: str, grammar: ResponseGrammar, instruction: str | None = None) -> tuple[str, str] | None:
    """(reason, detail) when a short answer's own sentences ask, request, refuse or give up; else None.

    Refusal and inability count in an answer of at most `inability_max_sentences` sentences (a long
    answer about Fermat says "impossible" as its topic); questions, requests and offers count when the
    answer's substance is at most `substance_max_chars`.
    """
    reading = read_answer(text, grammar)
    if instruction and _search(grammar.question_products, instruction):
        # The instruction asked for questions (a quiz, a joke, a chat reply): they are the answer.
        reading = AnswerReading([a for a in reading.acts if not a.addresses_user], reading.substance,
                                reading.sentences)
    brief = reading.sentences <= grammar.inability_max_sentences and reading.substance <= grammar.substance_max_chars
    thin = reading.substance <= grammar.substance_max_chars
    if brief:
        for acts in reading.acts:
            if acts.refusal or (acts.inability and _search(grammar.ai_self, acts.text)):
                return "refuses", acts.text
    if thin:
        for acts in reading.acts:
            if acts.missing_input or (acts.addresses_user and _search(grammar.input_words, acts.text)):
                return "asks_for_input", acts.text
    if brief:
        for acts in reading.acts:
            if acts.inability:
                return "claims_impossible", acts.text
    if thin:
        for acts in reading.acts:
            if acts.addresses_user:
                return "asks_back", acts.text
    return None


# --- evolutions: still an instruction, still the original's content ------------------------------

INPUT_SEPARATOR = "\n\n### Input\n"  # as record_store.loading writes it


@dataclass(frozen=True)
class EvolutionGrammar:
    """`evolution.grammar` in the rules file; see its header for each key."""

    korean_directive_endings: frozenset[str] = frozenset()
    korean_question_endings: frozenset[str] = frozenset()
    english_directive: re.Pattern[str] | None = None
    ignore_words: frozenset[str] = frozenset()
    copied_max_new_words: int = 1
    copied_min_kept_share: float = 0.8
    lost_min_words: int = 5
    lost_min_kept_share: float = 0.5
    lost_max_length_ratio: float = 1.0
    input_min_kept_share: float = 0.8


def _korean_directive(sentence: korean.Sentence, grammar: EvolutionGrammar) -> bool:
    ending = sentence.final_ending()
    return ending in grammar.korean_directive_endings or ending in grammar.korean_question_endings


def is_directive(text: str, grammar: EvolutionGrammar) -> bool:
    """Does any sentence of `text` ask or tell someone to do something (a question, an imperative)?"""
    task = text.split(INPUT_SEPARATOR, 1)[0]
    if re.search(r"[?？]", task):
        return True
    for line in task.splitlines():
        line = _MARKUP.sub("", _LIST_OR_TABLE_LINE.sub("", line)).strip()
        if not line:
            continue
        if korean.is_korean(line):
            if any(_korean_directive(s, grammar) for s in korean.sentences(line)):
                return True
        elif any(_search(grammar.english_directive, s.strip()) for s in _english_sentences(line)):
            return True
    return False


_LATIN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _english_stem(word: str) -> str:
    word = word.removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _same_language(original: str, evolved: str) -> bool:
    # Across languages no word is shared; language_changed speaks for those pairs.
    return korean.is_korean(original) == korean.is_korean(evolved)


def content_words(text: str, grammar: EvolutionGrammar) -> list[str]:
    """The words that say what a text asks about: Korean content morphemes, English non-stopwords (stemmed)."""
    if korean.is_korean(text):
        words = list(korean.content_words(text))
    else:
        words = [_english_stem(w) for w in _LATIN_WORD.findall(text.lower())]
    return [w for w in words if w not in grammar.ignore_words]


def copied_detail(original: str, evolved: str, grammar: EvolutionGrammar) -> str | None:
    """Why `evolved` is the original again in other words (no new requirement), or None."""
    if not _same_language(original, evolved):
        return None
    before, after = content_words(original, grammar), content_words(evolved, grammar)
    if not before:
        return None
    new = sorted(set(after) - set(before))
    grew = len(after) - len(before)
    kept = len(set(before) & set(after)) / len(set(before))
    if (len(new) <= grammar.copied_max_new_words and grew <= grammar.copied_max_new_words
            and kept >= grammar.copied_min_kept_share):
        return "no new requirement" + (f" (only {', '.join(new)})" if new else "")
    return None


def lost_content_detail(original: str, evolved: str, grammar: EvolutionGrammar) -> str | None:
    """Why `evolved` no longer carries the original's input block or most of its content, or None."""
    task, _, given = original.partition(INPUT_SEPARATOR)
    if not _same_language(task, evolved):
        return None
    kept = set(content_words(evolved, grammar))
    if given.strip():
        needed = content_words(given, grammar) or [given.strip()]
        share = sum(1 for w in needed if w in kept) / len(needed)
        if INPUT_SEPARATOR not in evolved and share < grammar.input_min_kept_share:
            return f"the input block is gone ({share:.0%} of its words kept)"
    task_words = content_words(task, grammar)
    words = set(task_words)
    shrank = len(content_words(evolved, grammar)) <= grammar.lost_max_length_ratio * len(task_words)
    if len(words) >= grammar.lost_min_words and shrank:
        share = len(words & kept) / len(words)
        if share < grammar.lost_min_kept_share:
            return f"{share:.0%} of the original's {len(words)} content words kept"
    return None


def answered_detail(original: str, evolved: str, grammar: EvolutionGrammar) -> str | None:
    """Why `evolved` reads as an answer: the original asked or told, the evolved text does neither."""
    if is_directive(original, grammar) and not is_directive(evolved, grammar):
        return "no question or instruction left: reads as an answer"
    return None


# --- script drift --------------------------------------------------------------------------------

_HAN_OR_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class ScriptChecks:
    """`script` in the rules file: mixed_script and broken_text."""

    mixed_script_min_chars: int = 2
    allowed_when_source_mentions: re.Pattern[str] | None = None
    broken: re.Pattern[str] | None = None


def mixed_script_detail(source: str | None, output: str, checks: ScriptChecks) -> str | None:
    """Han or kana in `output` when `source` had none (and did not ask for Chinese or Japanese)."""
    found = _HAN_OR_KANA.findall(output)
    if len(found) < checks.mixed_script_min_chars:
        return None
    if source is not None and (_HAN_OR_KANA.search(source) or _search(checks.allowed_when_source_mentions, source)):
        return None
    return f"{len(found)} Han/kana characters, e.g. \"{''.join(found[:6])}\""


def broken_text_detail(output: str, checks: ScriptChecks) -> str | None:
    """U+FFFD or a mojibake sequence (UTF-8 read as Latin-1 / cp1252) anywhere in `output`."""
    if "\ufffd" in output:
        return f"{output.count(chr(0xFFFD))} replacement characters (U+FFFD)"
    hit = checks.broken.search(output) if checks.broken is not None else None
    return f"mojibake {hit.group(0)!r}" if hit else None
