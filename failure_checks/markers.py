"""Pull the evolved instruction and the optimized method out of raw LLM answers.

The evolving prompt asks for four sections (`#Methods List#`, `#Plan#`,
`#Rewritten Instruction#`, `#Finally Rewritten Instruction#`); the optimizer
prompt asks for the new method inside a fence opened by "```Optimized Method".
Models drift from both formats, so the markers here are patterns, not literals.

Everything in this module is pure: text in, `ParsedText` out.

Strict mode accepts only text found behind a marker. Lenient mode is for tiny
local models that often skip markers; it falls back to heuristics and flags
the result with `lenient=True` so callers can count or distrust such rows.
"""

import re
from dataclasses import dataclass
from typing import Literal

ParseMode = Literal["strict", "lenient"]
"""strict needs the final marker; lenient also takes the last substantial paragraph (tiny local models)."""


@dataclass(frozen=True)
class ParsedText:
    text: str | None  # None when nothing usable was found
    lenient: bool = False  # True when the text came from the lenient fallback, not from a marker


# --- reasoning blocks -------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def strip_think(answer: str) -> str:
    """Remove reasoning-model thinking, keeping only the visible answer.

    - every closed <think>...</think> block is removed;
    - a stray </think> without an opening tag (some chat templates put the
      opening tag in the prompt) drops everything before it;
    - an unclosed <think> drops everything after it: the model ran out of
      tokens while still thinking, so nothing after it is an answer.
    """
    text = _THINK_BLOCK.sub("", answer)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text.strip()


# --- section markers --------------------------------------------------------

# Decoration allowed before a marker: markdown headings, bold, the protocol's
# own '#', quote '>', list bullets and numbering such as "4." or "4)".
_MARKER_LEAD = r"(?P<lead>[ \t]*(?:(?:[#*_>-]+|\d+[.)])[ \t]*)*)"
# What closes a marker: '#', '**', a colon, in any mix ("**...:**", "#...#:").
_MARKER_CLOSE = r"(?P<close>[ \t]*[#*_]*[ \t]*[:：]?[ \t]*[#*_]*)"

_FINAL_WORDS = (
    r"final(?:ly)?[ \t]+(?:(?:rewritten|evolved|revised|refined)[ \t]+)?(?:instruction|prompt)s?"
    r"|최종[ \t]*(?:(?:재작성된|다시[ \t]+작성된|진화된|수정된)[ \t]*)?(?:지시문|지시|프롬프트)"
)
_REWRITTEN_WORDS = (
    r"(?:rewritten|evolved|revised|refined)[ \t]+(?:instruction|prompt)s?"
    r"|(?:재작성된|다시[ \t]+작성된|진화된|수정된)[ \t]*(?:지시문|지시|프롬프트)"
)


def _marker_pattern(words: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{_MARKER_LEAD}(?:{words})\b{_MARKER_CLOSE}[ \t]*(?P<rest>[^\n]*)$",
        re.IGNORECASE | re.MULTILINE,
    )


_FINAL_MARKER = _marker_pattern(_FINAL_WORDS)
_REWRITTEN_MARKER = _marker_pattern(_REWRITTEN_WORDS)
_PROTOCOL_HEADER = _marker_pattern(r"methods?[ \t]+list|plan|방법[ \t]*목록|계획")

# A following protocol-style section such as "#Explanation#" ends the instruction.
_NEXT_SECTION = re.compile(r"^[ \t]*#[^\W\d_][^#\n]{0,60}#", re.MULTILINE)


def _is_marker(match: re.Match[str]) -> bool:
    # "Final rewritten instruction should be short." at a line start is prose:
    # a real marker is closed by '#', '**' or ':' or stands alone on its line.
    return bool(match.group("close").strip()) or not match.group("rest").strip()


def _last_marker(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    markers = [m for m in pattern.finditer(text) if _is_marker(m)]
    return markers[-1] if markers else None


# --- cleaning the text behind a marker --------------------------------------

_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』"}


def _is_fence_line(line: str) -> bool:
    return line.strip().startswith("```")


def _strip_fences(text: str) -> str:
    """Remove a fence that wraps the whole text, or a stray unbalanced one."""
    lines = text.split("\n")
    fence_count = sum(_is_fence_line(line) for line in lines)
    starts, ends = _is_fence_line(lines[0]), lines[-1].strip() == "```"
    if fence_count == 2 and starts and ends and len(lines) > 1:
        lines = lines[1:-1]
    elif fence_count % 2 == 1 and ends:
        lines = lines[:-1]
    elif fence_count % 2 == 1 and starts:
        lines = lines[1:]
    return "\n".join(lines).strip()


def _strip_wrapping_quotes(text: str) -> str:
    closing = _QUOTE_PAIRS.get(text[:1])
    if closing is None or len(text) < 2 or not text.endswith(closing):
        return text
    inner = text[1:-1]
    # '"A" and "B"' starts and ends with quotes that do not wrap it.
    if text[0] in inner or closing in inner:
        return text
    return inner.strip()


def _clean_section(body: str) -> str | None:
    next_section = _NEXT_SECTION.search(body)
    if next_section:
        body = body[: next_section.start()]
    text = body.strip()
    if text:
        text = _strip_wrapping_quotes(_strip_fences(text))
    return text or None


def _text_after(match: re.Match[str], answer: str) -> str | None:
    return _clean_section(_cut_commentary(answer[match.start("rest"):]))


# --- commentary after the instruction ------------------------------------------

# Models often add a remark after the final instruction ("Note: I added a constraint.").
# It is CUT, not made a failure: the remark starts on a line of its own after the
# instruction, so the instruction before it is complete and worth the paid call, and
# failing it would teach the optimizer nothing about the method. Only remarks about the
# rewrite itself are cut: an instruction may carry its own "Note: answer in French." line.
_COMMENTARY_LABEL = (
    r"[(\[]?[ \t]*[*_]*[ \t]*(?:notes?|explanation|changes(?:[ \t]+made)?|comments?|remarks?|rationale"
    r"|참고|설명|변경[ \t]*사항|해설|주석)[ \t]*[*_]*[ \t]*[:：]"
)
_FIRST_PERSON = r"\bI(?:'ve|[ \t]+have)?[ \t]+(?:added|made|changed|kept|included|introduced|increased|removed|rewrote|revised)\b"
_ABOUT_THE_REWRITE = (
    r"\b(?:this|the)[ \t]+(?:rewritten|revised|evolved|refined|new|final|updated)[ \t]+(?:instruction|version|prompt)"
    r"|(?:추가|변경|수정|보완|강화)(?:했|하였)습니다|넣었습니다|바꾸었습니다|바꿨습니다"
    r"|(?:이|위의?)[ \t]*(?:지시문|지시|버전|프롬프트)(?:은|는|에서)"
)
# A bare "I added ..." line may be the instruction's own input text ("I added sugar to the
# tea"); it only counts in parentheses or when it names a part of the task.
_TASK_WORD = r"constraint|requirement|condition|instruction|prompt|task|version|complexity|difficulty|limit|step|detail"
_COMMENTARY_LINE = re.compile(
    rf"^[ \t]*(?:{_COMMENTARY_LABEL}[^\n]*?(?:{_FIRST_PERSON}|{_ABOUT_THE_REWRITE})"
    rf"|[(\[][ \t]*{_FIRST_PERSON}|{_FIRST_PERSON}[^\n]{{0,80}}?\b(?:{_TASK_WORD})|{_ABOUT_THE_REWRITE})",
    re.IGNORECASE | re.MULTILINE,
)


def _cut_commentary(body: str) -> str:
    """Drop a remark about the rewrite that follows the instruction, and everything after it."""
    first_line_end = body.find("\n", len(body) - len(body.lstrip()))
    if first_line_end < 0:
        return body
    remark = _COMMENTARY_LINE.search(body, first_line_end + 1)
    return body[: remark.start()] if remark else body


# --- lenient paragraph fallback ----------------------------------------------

_HEADER_LINE = re.compile(
    r"^[ \t]*(?:#[^#\n]{1,60}#[ \t]*:?|#{1,6}[ \t]+.*|\*\*[^*\n]+\*\*[ \t]*:?|.{1,60}:)[ \t]*$"
)
_MIN_PARAGRAPH_CHARS = 15


def _paragraph_body(paragraph: str) -> str:
    lines = paragraph.strip().split("\n")
    while lines and _HEADER_LINE.match(lines[0]):
        lines = lines[1:]
    return "\n".join(lines)


def _is_substantial(paragraph: str) -> bool:
    header = _PROTOCOL_HEADER.match(paragraph.strip())
    if header and _is_marker(header):
        return False  # the methods list or the plan, not an instruction
    body = _paragraph_body(paragraph)
    return len("".join(body.split())) >= _MIN_PARAGRAPH_CHARS


def _last_substantial_paragraph(answer: str) -> str | None:
    paragraphs = re.split(r"\n[ \t]*\n", answer)
    for paragraph in reversed(paragraphs):
        if _is_substantial(paragraph) and not _COMMENTARY_LINE.match(paragraph.strip()):
            return _clean_section(_paragraph_body(paragraph))
    return None


# --- public parsers -----------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in ("strict", "lenient"):
        raise ValueError(f"parse mode must be 'strict' or 'lenient', not {mode!r}")


def parse_evolved_instruction(answer: str, mode: ParseMode = "strict") -> ParsedText:
    """Return the text after the last final-instruction marker.

    Lenient fallbacks, in order: text after the last "#Rewritten Instruction#"
    style marker, then the last paragraph with at least 15 non-space chars.
    """
    _check_mode(mode)
    text = strip_think(answer)
    final = _last_marker(_FINAL_MARKER, text)
    if final:
        return ParsedText(_text_after(final, text))
    if mode == "strict":
        return ParsedText(None)
    rewritten = _last_marker(_REWRITTEN_MARKER, text)
    found = _text_after(rewritten, text) if rewritten else None
    found = found or _last_substantial_paragraph(text)
    return ParsedText(found, lenient=found is not None)


# --- optimized method ------------------------------------------------------------

_METHOD_FENCE_OPEN = re.compile(
    r"^[ \t]*(?:"
    r"```[ \t]*\**[ \t]*optimized[ \t_-]*method\b[^\n]*"  # ```Optimized Method
    r"|(?:#+[ \t]*)?\*{0,2}[ \t]*optimized[ \t]+method[ \t]*\*{0,2}[ \t]*:?[ \t]*\*{0,2}[ \t]*"
    r"\n(?:[ \t]*\n)*[ \t]*```[^\n]*"  # **Optimized Method** then a fence
    r"|```[ \t]*[\w-]*[ \t]*\n[ \t]*(?:#+[ \t]*)?\*{0,2}[ \t]*(?:optimized[ \t]+method|최적화된[ \t]*방법)"
    r"[ \t]*\*{0,2}[ \t]*:?[ \t]*\*{0,2}[ \t]*"  # a fence, then the label on the line below
    r")\n",
    re.IGNORECASE | re.MULTILINE,
)
_METHOD_HEADING = re.compile(
    r"^[ \t]*(?:#+[ \t]*)?(?:```[ \t]*)?\**[ \t]*optimized[ \t]+method\b[ \t]*\**[ \t]*:?[ \t]*\**",
    re.IGNORECASE | re.MULTILINE,
)
_MIN_LENIENT_METHOD_CHARS = 80


def _fence_close(text: str, start: int) -> tuple[int, int] | None:
    """Find the fence closing a block whose content starts at `start`.

    Returns (content end, position after the closing line). A fence line with
    a language tag ("```python") opens an inner block, so methods may carry
    their own examples; a bare ``` closes the innermost block.
    """
    depth, pos = 1, start
    for line in text[start:].splitlines(keepends=True):
        if _is_fence_line(line):
            depth += -1 if line.strip().strip("`") == "" else 1
            if depth == 0:
                return pos, pos + len(line)
        pos += len(line)
    return None


def _method_blocks(text: str) -> list[str]:
    blocks, pos = [], 0
    while opening := _METHOD_FENCE_OPEN.search(text, pos):
        closing = _fence_close(text, opening.end())
        if closing is None:
            break
        blocks.append(text[opening.end(): closing[0]])
        pos = closing[1]
    return blocks


def _lenient_method(text: str) -> str | None:
    headings = list(_METHOD_HEADING.finditer(text))
    body = text[headings[-1].end():] if headings else text
    body = _strip_fences(body.strip()) if body.strip() else ""
    return body if len(body) >= _MIN_LENIENT_METHOD_CHARS else None


def parse_optimized_method(answer: str, mode: ParseMode = "strict") -> ParsedText:
    """Return the content of the last "```Optimized Method" block.

    Lenient fallback: the text after the last "Optimized Method" heading, or
    else the whole answer, if it is at least 80 characters long.
    """
    _check_mode(mode)
    text = strip_think(answer)
    blocks = _method_blocks(text)
    if blocks:
        return ParsedText(blocks[-1].strip() or None)
    if mode == "strict":
        return ParsedText(None)
    found = _lenient_method(text)
    return ParsedText(found, lenient=found is not None)
