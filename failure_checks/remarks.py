"""Tell the model's remark about its rewrite from a line of the instruction itself.

Models often end an answer with a remark ("Note: I added a word limit."). Keeping one is a
small blemish; cutting a line of the instruction is silent data corruption. So a remark is
cut only when it is the last paragraph, every line of it reads as a report about the rewrite,
and nothing in it asks the reader to do anything. A remark is cut rather than made a failure:
the instruction above it is complete and worth the paid call. The caller never looks for a
remark in or before an input block. Everything here is pure text in, text out.
"""

from __future__ import annotations

import re

# --- what a remark starts with ----------------------------------------------------

_LABEL = (r"(?:notes?|explanation|changes(?:[ \t]+made)?|comments?|remarks?|rationale"
          r"|참고|설명|변경[ \t]*사항|해설|주석|비고)")
_LABEL_START = re.compile(rf"^[*_]{{0,2}}[ \t]*{_LABEL}[ \t]*[*_]{{0,2}}[ \t]*[:：][ \t]*[*_]{{0,2}}[ \t]*", re.IGNORECASE)
_PARENTHESIZED = re.compile(r"^[(\[](?P<inner>.*)[)\]][.。]?$", re.DOTALL)
# "The new version must ..." and "This new policy ..." are instruction text; only the names
# a model gives its own output count as the subject of a remark.
_REWRITE_SUBJECT = re.compile(r"^(?:this|the)[ \t]+(?:rewritten|evolved|revised|refined)[ \t]+(?:instruction|prompt)\b",
                              re.IGNORECASE)
_KO_SUBJECT = re.compile(r"^(?:이|위의?|재작성된|수정된|진화된)[ \t]*(?:지시문|지시|프롬프트)(?:은|는|에서는?)")

# --- what makes it a report about the rewrite --------------------------------------

_EDIT = (r"(?:added|made|changed|included|introduced|increased|removed|rewrote|revised|replaced|expanded"
         r"|specified|required|kept|narrowed|broadened)")
# Nouns that name what a rewrite adds; "step", "example" or "condition" are as likely the user's
# own ("I included a step-by-step guide", "I added a condition to the if statement").
_ADDED_PART = r"(?:constraints?|requirements?|limits?|complexity|difficulty|instructions?|prompts?|criteri(?:on|a))"
_I = r"I(?:'ve|[ \t]+have)?(?:[ \t]+also)?[ \t]+"
# "I added sugar to the tea." is input text; an edit report names what the rewrite added.
_EDIT_REPORT = re.compile(
    rf"(?:^|\b{_I}){_EDIT}\b[^\n]{{0,80}}?\b{_ADDED_PART}\b|\b{_I}made[ \t]+the[ \t]+(?:task|instruction|prompt|question)\b",
    re.IGNORECASE,
)
_FIRST_PERSON_EDIT = re.compile(rf"^{_I}{_EDIT}\b", re.IGNORECASE)
_REWRITE_REFERENCE = re.compile(
    r"\b(?:original|rewritten|evolved|revised|refined)[ \t]+(?:instruction|prompt)s?\b"
    r"|\bto[ \t]+make[ \t]+(?:it|the[ \t]+(?:task|instruction|prompt|question))[ \t]+"
    r"(?:harder|more[ \t]+(?:complex|challenging|difficult|demanding|specific))"
    r"|\b(?:increas(?:e|es|ed|ing)|rais(?:e|es|ed|ing)|adds?|added)[ \t]+(?:the[ \t]+)?(?:difficulty|complexity)\b",
    re.IGNORECASE,
)
_KO_EDIT = (r"(?:(?:추가|변경|수정|보완|강화|반영|명시|구체화)(?:했|하였)습니다|넣었습니다|바꾸었습니다|바꿨습니다"
            r"|높였습니다|늘렸습니다|줄였습니다|바뀌었습니다|(?:추가|변경|수정|강화)되었습니다)")
_KO_ADDED_PART = r"(?:조건|제한|요구|난이도|복잡|지시문|지시|프롬프트|제약)"
_KO_ORIGIN = r"(?:(?:원래|기존|원본|원문)(?:의)?[ \t]*(?:지시문|지시|프롬프트|보다)|재작성)"
_KO_REPORT = re.compile(rf"{_KO_ADDED_PART}[^\n]*{_KO_EDIT}|{_KO_ORIGIN}")
# "단어 수 제한을 추가했습니다." needs no subject in Korean: the sentence ends on the edit, and
# what it added is a limit or a constraint ("코드에 조건을 추가했습니다." is the user's).
_KO_SUBJECTLESS_REPORT = re.compile(rf"(?:제한|제약|난이도|복잡|지시문|프롬프트)[^\n]*{_KO_EDIT}[.!。]?$")

# --- what makes a line instruction-like, whatever else it looks like --------------------

_ADDRESSES_THE_READER = re.compile(
    r"\b(?:you|your|must|should|please|do[ \t]+not|don't|never|make[ \t]+sure|be[ \t]+sure)\b|[?？]"
    r"|세요|시오|십시오|하라\b|마라\b|주세요|바랍니다|해야|반드시|하지[ \t]*마",
    re.IGNORECASE,
)
# A later sentence of a remark describes ("It now asks for sources."); one that starts with
# any other word may be an imperative ("Answer in French.").
_DESCRIPTIVE_START = {"i", "i've", "it", "it's", "its", "this", "that", "these", "those", "the", "also", "now",
                      "both", "each", "additionally", "together", "such", "in", "with", "as", "so", "and", "but"}
_SENTENCE_BREAK = re.compile(r"(?<=[.!;])[ \t]+")
_FIRST_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def _has_imperative_sentence(text: str) -> bool:
    for sentence in _SENTENCE_BREAK.split(text)[1:]:
        word = _FIRST_WORD.match(sentence.lstrip("(*_\"'“ "))
        if word and word.group().lower() not in _DESCRIPTIVE_START:
            return True
    return False


def _reports_the_rewrite(text: str) -> bool:
    return bool(_EDIT_REPORT.search(text) or _REWRITE_REFERENCE.search(text) or _KO_REPORT.search(text))


def _is_remark_line(line: str) -> bool:
    text = line.strip()
    if not text or _ADDRESSES_THE_READER.search(text) or _has_imperative_sentence(text):
        return False
    if label := _LABEL_START.match(text):
        return _reports_the_rewrite(text[label.end():])
    if parenthesized := _PARENTHESIZED.match(text):
        return _reports_the_rewrite(parenthesized.group("inner").strip())
    if _REWRITE_SUBJECT.match(text):
        return True
    if _KO_SUBJECT.match(text):
        return bool(_KO_REPORT.search(text))
    if _FIRST_PERSON_EDIT.match(text):
        # "I added a constraint to the solver." may be the user's own words: it takes a reference to the rewrite.
        return bool(_REWRITE_REFERENCE.search(text))
    return bool(_KO_SUBJECTLESS_REPORT.search(text))


def is_remark_paragraph(paragraph: str) -> bool:
    """True when every line of `paragraph` is, on its own, a remark about the rewrite that asks nothing of the reader."""
    text = paragraph.strip()
    if _PARENTHESIZED.match(text):
        text = " ".join(text.split())  # one remark in parentheses, wrapped over several lines
    lines = text.split("\n")
    return bool(text) and all(map(_is_remark_line, lines))


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def cut_trailing_remarks(text: str) -> str:
    """`text` without the remarks about the rewrite that end it; the first paragraph always stays."""
    text = text.rstrip()
    while breaks := list(_PARAGRAPH_BREAK.finditer(text)):
        if not is_remark_paragraph(text[breaks[-1].end():]):
            break
        text = text[:breaks[-1].start()].rstrip()
    return text
