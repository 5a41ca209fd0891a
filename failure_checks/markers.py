"""Pull the evolved instruction and the optimized method out of raw LLM answers.

The evolving prompt asks for four sections (`#Methods List#`, `#Plan#`,
`#Rewritten Instruction#`, `#Finally Rewritten Instruction#`); the optimizer
prompt asks for the new method inside a fence opened by "```Optimized Method".
Models drift from both formats, so the markers here are patterns, not literals.

Everything in this module is pure: text in, `ParsedText` out. A parser that drops a line of the
instruction corrupts data silently, so it cuts only what is clearly not the instruction: a closing
"#Explanation#" section and a final remark about the rewrite (failure_checks/remarks.py), and
never anything in or before an input block ("### Input", appended by the loader).

Strict mode accepts only text found behind a marker. Lenient mode is for tiny
local models that often skip markers; it falls back to heuristics and flags
the result with `lenient=True` so callers can count or distrust such rows.
"""

import re
from dataclasses import dataclass
from typing import Literal

from failure_checks.remarks import cut_trailing_remarks, is_remark_paragraph

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
# What closes a marker: '#', '**', a colon, in any mix ("**...:**", "#...#:"); a '#' after a
# space that starts a word is the instruction's hashtag ("#Final...# #summer").
_DECORATION = r"(?:[ \t]*[#*_]+(?![^\W_]))?"
_MARKER_CLOSE = rf"(?P<close>[#*_]*{_DECORATION}[ \t]*[:：]?{_DECORATION})"

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

# A following protocol-style section such as "#Explanation#" ends the instruction. Only
# names of the model's own commentary count: "#Name#" may be a placeholder in an instruction.
_CLOSING_SECTION = re.compile(
    r"^[ \t]*#[ \t]*(?:explanations?|rationale|reasoning|justification|changes(?:[ \t]+made)?"
    r"|summary[ \t]+of[ \t]+changes|설명|해설|변경[ \t]*사항)[ \t]*#",
    re.IGNORECASE | re.MULTILINE,
)

# The block the loader appends for --input-field ("### Input"), or a model's restyling of it.
# Nothing in it or after it is ever cut, and no marker is looked for inside it.
_INPUT_HEADER = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?[*_]{0,2}[ \t]*(?:input|입력)[ \t]*[*_]{0,2}[ \t]*#?[ \t]*[:：]?[ \t]*[*_]{0,2}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)

# "Final instruction: answer in French." may be a line of an instruction: bare words with text
# behind them on their line are no marker unless decorated.
_QUALIFIED_WORDS = re.compile(r"rewritten|evolved|revised|refined|재작성|다시|진화|수정", re.IGNORECASE)


def _split_input_block(text: str) -> tuple[str, str]:
    """(the text before the first input block, the block to the end); the block is "" when there is none."""
    header = _INPUT_HEADER.search(text)
    return (text[: header.start()], text[header.start():]) if header else (text, "")


def _is_marker(match: re.Match[str]) -> bool:
    # "Final rewritten instruction should be short." at a line start is prose:
    # a real marker is closed by '#', '**' or ':' or stands alone on its line.
    return bool(match.group("close").strip()) or not match.group("rest").strip()


def _is_decorated(match: re.Match[str]) -> bool:
    return any(char in match.group("lead") + match.group("close") for char in "#*_")


def _is_instruction_marker(match: re.Match[str]) -> bool:
    if not _is_marker(match):
        return False
    words = match.string[match.end("lead"): match.start("close")]
    return _is_decorated(match) or not match.group("rest").strip() or bool(_QUALIFIED_WORDS.search(words))


def _last_marker(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last marker, decorated ones first; none inside an input block that follows a marker.

    Beside a decorated marker, a plain one ("Final Rewritten Instruction: ...") is a draft's or
    a line of the instruction.
    """
    markers: list[re.Match[str]] = []
    for marker in filter(_is_instruction_marker, pattern.finditer(text)):
        if markers and _INPUT_HEADER.search(text, markers[-1].end(), marker.start()):
            break  # the input data of the instruction found so far: kept whole, markers and all
        markers.append(marker)
    decorated = [m for m in markers if _is_decorated(m)]
    return (decorated or markers)[-1] if markers else None


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


def _cut_closing_section(text: str) -> str:
    section = _CLOSING_SECTION.search(text)
    return text[: section.start()] if section else text


def _clean_text(body: str) -> str | None:
    """The instruction in `body`: a closing commentary section and trailing remarks cut, unless an input block follows."""
    head, input_block = _split_input_block(body)
    if not input_block:
        head = cut_trailing_remarks(_strip_fences(_cut_closing_section(head).strip()))
    text = (head + input_block).strip()
    if text:
        text = _strip_wrapping_quotes(_strip_fences(text))
    return text or None


def _text_after(match: re.Match[str], answer: str) -> str | None:
    return _clean_text(answer[match.start("rest"):])


# --- lenient paragraph fallback ----------------------------------------------

# A header line above the paragraph is dropped only when it announces the rewrite ("New version:",
# "**Here is the harder prompt**"): "Answer the following question:" or "## Weekly report" is
# the instruction's first line.
_ANNOUNCEMENT = (
    r"(?:here(?:'s|[ \t]+is|[ \t]+are)\b[^\n]{0,60}?"
    r"|(?:(?:the|my|a)[ \t]+)?(?:new|rewritten|evolved|revised|refined|improved|updated|harder|final)\b[^\n]{0,30}?"
    r"|(?:instruction|prompt|version|rewrite)s?"
    r"|(?:새로운?|수정된|재작성된|진화된|개선된|최종)[^\n]{0,20}?)"
)
_HEADER_LINE = re.compile(
    r"^[ \t]*(?:#[^#\n]{1,60}#[ \t]*:?"  # a protocol-style "#Section#"
    rf"|(?:#{{1,6}}[ \t]+|\*\*[ \t]*){_ANNOUNCEMENT}[ \t]*(?:\*\*)?[ \t]*[:：]?[ \t]*(?:\*\*)?"  # heading or bold
    rf"|{_ANNOUNCEMENT}[:：])[ \t]*$",
    re.IGNORECASE,
)
_MIN_PARAGRAPH_CHARS = 15
_PARAGRAPH_START = re.compile(r"(?:^|\n[ \t]*\n)")


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
    """The last paragraph that is neither a plan nor a remark; with an input block, the paragraph before it and the block."""
    head, input_block = _split_input_block(answer)
    starts = [m.end() for m in _PARAGRAPH_START.finditer(head)]
    ends = [m.start() for m in _PARAGRAPH_START.finditer(head)][1:] + [len(head)]
    for start, end in reversed(list(zip(starts, ends))):
        paragraph = head[start:end]
        if not _is_substantial(paragraph):
            continue
        if input_block:
            return _clean_text(_paragraph_body(head[start:]) + "\n\n" + input_block)
        if not is_remark_paragraph(paragraph):
            return _clean_text(_paragraph_body(paragraph))
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
