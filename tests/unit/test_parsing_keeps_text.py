"""Issue 18 item 1: the answer parser never cuts a line of the instruction.

A property test builds hundreds of instructions from line fragments that look like remarks,
carry marker strings or an input block, wraps each in the answers real models write, and
checks that every line survives in strict and lenient mode. Then the two short lists: the
trailing remarks that are cut, and the look-alikes that must not be.
"""

from __future__ import annotations

import random

import pytest

from failure_checks.markers import parse_evolved_instruction
from failure_checks.rules import FailureRules
from record_store.loading import INPUT_SEPARATOR

# Lines an instruction may hold, some of them shaped like a remark or a marker.
INSTRUCTION_LINES = [
    "Rewrite the paragraph below for a ten-year-old reader.",
    "The new version must keep all three facts and stay under 80 words.",
    "The revised version of the menu should list prices in euros.",
    "The updated version of the policy is attached below.",
    "This new policy applies to every employee from Monday.",
    "This new version of the app crashes on start; find the cause.",
    "I added sugar to the tea.",
    "I added a constraint to the solver.",
    "I have changed the title of the essay twice.",
    "Note: answer in French.",
    "Note: the haiku must not mention the sky.",
    "Note: I added sugar to the tea and now it tastes odd.",
    "Changes: list every change you made.",
    "(Use no more than 50 words.)",
    "The original instruction asked for a list, so keep the list format.",
    "Explain what the tag \"#Rewritten Instruction#\" means in a prompt.",
    "Start your reply with the words \"Final Rewritten Instruction:\" and nothing else.",
    "Final instruction: reply only in French.",
    "Answer the following question:",
    "#summer #beach #sun",
    "Fill in the template fields #Name# and #Date#.",
    "Write a four-line poem about autumn leaves.",
    "이 프롬프트에서 요구하는 형식을 정확히 지키세요.",
    "이 지시문은 반드시 세 문단으로 답하게 합니다.",
    "이 지시문은 원래 문장의 뜻을 유지해야 합니다.",
    "참고: 하늘은 언급하지 마세요.",
    "저는 어제 차에 설탕을 추가했습니다.",
    "서울의 역사를 세 문단으로 설명하고, 각 문단에 연도를 포함하세요.",
]
# A marker string at a line start: fine behind a final marker, but without one it is a
# marker itself (lenient mode takes the text behind "#Rewritten Instruction#").
MARKER_AT_LINE_START = "#Rewritten Instruction# is the label of a draft; say why drafts matter."
# Genuine remarks: inside an instruction they must stay, wherever text follows them.
REMARKS = [
    "Note: I added a constraint about the word count.",
    "(I added a word limit to increase difficulty.)",
    "참고: 단어 수 제한을 추가했습니다.",
    "This rewritten instruction adds a requirement for sources.",
    "**Explanation:** I've made the task require evidence.",
]
# A final marker alone on a line of the input data: behind a real final marker it is data; in an
# answer without one it is read as the marker (nothing tells the two apart).
FINAL_MARKER_LINE = "#Final Rewritten Instruction#"
INPUT_LINES = [
    "Photosynthesis turns light, water and air into sugar.",
    "Plants release oxygen as they do it.",
    "Note: I added a constraint about word count.",
    "(I added a word limit to increase difficulty.)",
    FINAL_MARKER_LINE,
    "#Explanation#",
    "Final instruction: none.",
    "참고: 단어 수 제한을 추가했습니다.",
    "",
]

FINAL_MARKERS = [
    "#Finally Rewritten Instruction#", "#Final Rewritten Instruction#", "#Final Evolved Instruction#",
    "#Final Refined Instruction#", "Final Rewritten Instruction:", "Finally Rewritten Instruction:",
    "**Finally Rewritten Instruction**:", "**Final Rewritten Instruction:**", "### Final Rewritten Instruction",
    "## **Final Evolved Instruction**", "4. **Finally Rewritten Instruction**:", "#최종 재작성된 지시문#",
]
SAME_LINE_MARKERS = [m for m in FINAL_MARKERS if m.endswith((":", "#", ":**"))]
TRAILING_REMARK = "Note: I added a constraint about the word count to make it harder."
EXPLANATION = "#Explanation#\nI added a comparison step."


def build_instruction(rng: random.Random, marker_lines: bool = True, paragraphs: int | None = None) -> str:
    """Paragraphs of fragment lines, perhaps an input block; remarks anywhere but alone in the last paragraph."""
    safe = INSTRUCTION_LINES + ([MARKER_AT_LINE_START] if marker_lines else [])
    input_lines = INPUT_LINES if marker_lines else [line for line in INPUT_LINES if line != FINAL_MARKER_LINE]
    count = paragraphs or rng.randint(1, 3)
    blocks = []
    for _ in range(count):
        lines = [rng.choice(safe + REMARKS) for _ in range(rng.randint(1, 3))]
        blocks.append(lines)
    has_input = rng.random() < 0.5
    if not has_input and not any(line in safe for line in blocks[-1]):
        blocks[-1].insert(rng.randrange(len(blocks[-1]) + 1), rng.choice(safe))  # else it is a real final remark
    if blocks[0][0] in REMARKS:
        blocks[0].insert(0, rng.choice(safe))  # the first line has to be the instruction's
    text = "\n\n".join("\n".join(lines) for lines in blocks)
    if has_input:
        inputs = [rng.choice(input_lines) for _ in range(rng.randint(1, 5))]
        text += INPUT_SEPARATOR + "\n".join(["Photosynthesis happens in leaves.", *inputs]).strip()
    return text


def wrappings(instruction: str) -> list[tuple[str, str]]:
    """(answer, what the parser must return) for the answers models write around an instruction."""
    has_input = INPUT_SEPARATOR in instruction
    first, _, rest = instruction.partition("\n")
    protocol = ("#Methods List#\n1. Add a constraint.\n2. Ask for an example.\n\n#Plan#\nAdd both.\n\n"
                f"#Rewritten Instruction#\n{first}\n\n")
    answers = []
    for marker in FINAL_MARKERS:
        answers.append((f"{protocol}{marker}\n{instruction}", instruction))
        answers.append((f"Sure! Here it is.\n\n{marker}\n```\n{instruction}\n```", instruction))
        answers.append((f"<think>\n{marker}\nA draft.\n</think>\n{marker}\n\n{instruction}\n", instruction))
        # After an input block nothing is cut; otherwise a remark or an explanation after it is.
        answers.append((f"{marker}\n{instruction}\n\n{TRAILING_REMARK}",
                        f"{instruction}\n\n{TRAILING_REMARK}" if has_input else instruction))
        answers.append((f"{marker}\n{instruction}\n\n{EXPLANATION}",
                        f"{instruction}\n\n{EXPLANATION}" if has_input else instruction))
    for marker in SAME_LINE_MARKERS:
        answers.append((f"#Plan#\nAdd a constraint.\n{marker} {first}\n{rest}".rstrip("\n"), instruction))
    return answers


CASES = [build_instruction(random.Random(seed)) for seed in range(300)]


def test_the_generated_cases_cover_the_hard_shapes():
    joined = "\n".join(CASES)
    assert sum(INPUT_SEPARATOR in case for case in CASES) > 100
    assert sum(case.count("\n\n") >= 2 for case in CASES) > 100
    for fragment in [*INSTRUCTION_LINES, MARKER_AT_LINE_START, *REMARKS, *filter(None, INPUT_LINES)]:
        assert fragment in joined, fragment


@pytest.mark.parametrize("seed", range(len(CASES)))
def test_every_line_of_the_instruction_survives_parsing(seed):
    instruction = CASES[seed]
    for answer, expected in wrappings(instruction):
        for mode in ("strict", "lenient"):
            parsed = parse_evolved_instruction(answer, mode)
            lost = [line for line in instruction.split("\n") if line.strip() not in (parsed.text or "")]
            assert not lost, f"{mode} lost {lost} from\n{answer}"
            assert parsed.text == expected and not parsed.lenient, f"{mode}:\n{answer}"


@pytest.mark.parametrize("seed", range(100))
def test_lenient_paragraph_fallback_keeps_the_instruction_and_its_input(seed):
    # No marker at all: lenient mode takes the last substantial paragraph, and the input block with it.
    instruction = build_instruction(random.Random(10_000 + seed), marker_lines=False, paragraphs=1)
    # After an input block nothing is dropped: a closing "Done!" stays with the input.
    tail = "\n\nDone!" if INPUT_SEPARATOR in instruction else ""
    for answer, expected in ((f"I will make it harder.\n\nNew version:\n{instruction}", instruction),
                             (f"{instruction}\n\nDone!", instruction + tail),
                             (f"Here is the harder prompt:\n\n{instruction}\n\n{TRAILING_REMARK}",
                              f"{instruction}\n\n{TRAILING_REMARK}" if tail else instruction)):
        parsed = parse_evolved_instruction(answer, "lenient")
        assert parsed.text == expected and parsed.lenient, answer


@pytest.mark.parametrize(("answer", "expected"), [
    ("Answer the following question:\nWhat is 2 + 2, and why?", "Answer the following question:\nWhat is 2 + 2, and why?"),
    ("## Weekly report\nSummarize the notes in five bullet points.", "## Weekly report\nSummarize the notes in five bullet points."),
    ("**Task:**\nSummarize the notes in five bullet points.", "**Task:**\nSummarize the notes in five bullet points."),
    ("**Here is the harder prompt**\nSummarize the notes in five bullets.", "Summarize the notes in five bullets."),
    ("### New Version\nSummarize the notes in five bullets.", "Summarize the notes in five bullets."),
    ("수정된 지시문:\n회의록을 다섯 줄로 요약하세요.", "회의록을 다섯 줄로 요약하세요."),
])
def test_lenient_fallback_drops_only_a_header_that_announces_the_rewrite(answer, expected):
    assert parse_evolved_instruction(answer, "lenient").text == expected


# --- the trailing remarks that are cut, and the look-alikes that are not ---------------------

INSTRUCTION = "Rewrite the paragraph below for a ten-year-old reader.\nKeep all three facts."


@pytest.mark.parametrize("remark", [
    "Note: I added a constraint about the word count.",
    "(I added a word limit to increase difficulty.)",
    "참고: 단어 수 제한을 추가했습니다.",
    "(단어 수 제한을 추가했습니다.)",
    "단어 수 제한을 추가했습니다.",
    "**Explanation:** I've made the task require evidence.",
    "This rewritten instruction adds a requirement for sources. It now asks for two of them.",
    "I added a time limit to make it more challenging.",
    "이 지시문은 원래보다 더 구체적입니다.",
    "Note: I added a constraint about length.\n(I also made the task require one example.)",
    "(I added a word limit\nto increase the difficulty.)",
    "Note: I added a constraint about length.\n\n(I also added a step to increase difficulty.)",
])
@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_a_final_remark_about_the_rewrite_is_cut(remark, mode):
    parsed = parse_evolved_instruction(f"#Finally Rewritten Instruction#\n{INSTRUCTION}\n\n{remark}\n", mode)
    assert parsed.text == INSTRUCTION


@pytest.mark.parametrize("answer_body", [
    # Text follows the remark, so the remark is part of the instruction.
    f"{INSTRUCTION}\n\nNote: I added a constraint about length.\n\nAnswer in French.",
    f"{INSTRUCTION}\n\n(I added a word limit to increase difficulty.)\n\n{INPUT_SEPARATOR.strip()}\nSome text.",
    f"{INSTRUCTION}\nNote: I added a constraint about the word count.",  # not a paragraph of its own
    f"{INSTRUCTION}\n\nThis rewritten instruction adds a requirement.\nI added a constraint to the solver.",
    f"{INSTRUCTION}\n\nNote: I added a constraint about length. Answer in French.",
    # Shaped like a remark, but addressed to the reader or about something else.
    f"{INSTRUCTION}\n\nNote: I added a constraint; you must follow it.",
    f"{INSTRUCTION}\n\nThis rewritten instruction must be answered in French.",
    f"{INSTRUCTION}\n\nThe new version must keep all three facts and stay under 80 words.",
    f"{INSTRUCTION}\n\nThe revised version keeps all three facts.",
    f"{INSTRUCTION}\n\nI added a constraint to the solver.",
    f"{INSTRUCTION}\n\nI added sugar to the tea.",
    f"{INSTRUCTION}\n\nNote: I added sugar to the tea.",
    f"{INSTRUCTION}\n\nNote: I made it shorter already.",
    f"{INSTRUCTION}\n\n이 지시문은 반드시 세 문단으로 답하게 합니다.",
    f"{INSTRUCTION}\n\n이 프롬프트에서 요구하는 형식을 지키세요.",
    f"{INSTRUCTION}\n\n참고: 저는 설탕을 추가했습니다.",
    f"{INSTRUCTION}\n\n(단어 수 제한을 추가했습니까?)",
    f"{INSTRUCTION}\n\nChanges made:\n- Added a word limit.",
    f"{INSTRUCTION}\n\nNote: I included a step-by-step guide.",
    f"{INSTRUCTION}\n\nNote: I added a condition to the if statement.",
    f"{INSTRUCTION}\n\nNote: the original version had three verses.",
    f"{INSTRUCTION}\n\n(I revised the second example.)",
    f"{INSTRUCTION}\n\n코드에 조건을 추가했습니다.",
    f"{INSTRUCTION}\n\n예시를 두 개 추가했습니다.",
    f"{INSTRUCTION}\n\n이 지시문은 원래 회의록에서 나온 것입니다.",
    # A remark inside the input block is the user's data.
    f"{INSTRUCTION}{INPUT_SEPARATOR}Photosynthesis happens in leaves.\n\nNote: I added a constraint about length.",
    # Hashtags and placeholders are not a commentary section.
    f"{INSTRUCTION}\n#summer #beach\n#Name#\nDone.",
])
@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_text_that_only_looks_like_a_remark_is_kept(answer_body, mode):
    parsed = parse_evolved_instruction(f"#Finally Rewritten Instruction#\n{answer_body}", mode)
    assert parsed.text == answer_body


def test_a_bare_final_instruction_line_is_a_marker_only_when_decorated_or_alone_on_its_line():
    instruction = "Write a haiku about rain.\nFinal instruction: reply only in French."
    for marker in ("Final Instruction:\n", "Final Rewritten Instruction: ", "**Final Instruction:** ", "#Final Prompt#\n"):
        assert parse_evolved_instruction(f"#Plan#\nDo it.\n\n{marker}{instruction}").text == instruction
    # With text behind it, undecorated, it may be the instruction's own line: strict finds no marker.
    assert parse_evolved_instruction("Final instruction: reply only in French.").text is None
    assert parse_evolved_instruction("Final instruction: reply only in French.", "lenient").text == (
        "Final instruction: reply only in French.")


def test_a_marker_inside_the_input_block_is_data_not_a_marker():
    instruction = f"Summarize the notes below.{INPUT_SEPARATOR}Meeting notes\n#Final Rewritten Instruction#\nShip on Friday."
    assert parse_evolved_instruction(f"#Finally Rewritten Instruction#\n{instruction}").text == instruction


def test_the_example_from_the_issue_keeps_its_second_line_and_input():
    instruction = ("Rewrite the paragraph below for a ten-year-old reader.\n"
                   "The new version must keep all three facts and stay under 80 words."
                   f"{INPUT_SEPARATOR}Photosynthesis turns light into sugar.")
    for mode in ("strict", "lenient"):
        assert parse_evolved_instruction(f"#Finally Rewritten Instruction#\n{instruction}", mode).text == instruction


def test_a_good_evolution_with_a_new_version_line_is_not_unchanged():
    # The old cut left only the first line, a copy of the original: a false `unchanged`.
    original = "Rewrite the paragraph below for a ten-year-old reader."
    answer = ("#Plan#\nAdd a constraint.\n\n#Finally Rewritten Instruction#\n"
              f"{original}\nThe new version must keep all three facts and stay under 80 words.")
    parsed = parse_evolved_instruction(answer)
    assert FailureRules.load().check_evolution(original, parsed) is None
