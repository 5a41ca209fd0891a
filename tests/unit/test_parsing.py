"""Tests for failure_checks/markers.py: marker variants, fallbacks and cleaning of LLM answers."""

import pytest

from failure_checks.markers import ParsedText, parse_evolved_instruction, parse_optimized_method, strip_think

FULL_ANSWER = """#Methods List#
1. Add a constraint on length.
2. Ask for a worked example.

#Plan#
Step 1: pick the constraint. Step 2: add the example.

#Rewritten Instruction#
Write a poem about autumn.

#Finally Rewritten Instruction#
Write a four-line poem about autumn leaves and explain its rhyme scheme.
"""


# --- strip_think -----------------------------------------------------------------------


def test_strip_think_removes_one_block():
    assert strip_think("<think>let me see</think>  Answer here ") == "Answer here"


def test_strip_think_removes_several_multiline_blocks():
    answer = "<think>\nline one\nline two\n</think>\nPart A\n<THINK>again\n</Think>\nPart B"
    assert strip_think(answer) == "Part A\n\nPart B"


def test_strip_think_stray_closing_tag_drops_what_precedes_it():
    # The opening tag was in the chat template, so only </think> shows up.
    assert strip_think("reasoning without an opening tag\n</think>\nThe answer") == "The answer"


def test_strip_think_unclosed_tag_drops_to_the_end():
    assert strip_think("Visible part\n<think>never finished thinking") == "Visible part"
    assert strip_think("<think>cut off while thinking") == ""


def test_strip_think_without_tags_only_strips_whitespace():
    assert strip_think("  plain answer\n") == "plain answer"


# --- evolved instruction: markers ------------------------------------------------------


def test_full_protocol_answer_gives_final_section():
    parsed = parse_evolved_instruction(FULL_ANSWER)
    assert parsed == ParsedText(
        "Write a four-line poem about autumn leaves and explain its rhyme scheme."
    )


@pytest.mark.parametrize(
    "marker",
    [
        "#Finally Rewritten Instruction#",
        "#Final Rewritten Instruction#",
        "#Final Evolved Instruction#",
        "#Finally Evolved Instruction#",
        "#finally rewritten instruction#",
        "#FINAL REWRITTEN INSTRUCTION#:",
        "Final Rewritten Instruction:",
        "Finally Rewritten Instruction:",
        "**Finally Rewritten Instruction**:",
        "**Final Rewritten Instruction:**",
        "### Final Rewritten Instruction",
        "## **Finally Rewritten Instruction**",
        "4. **Finally Rewritten Instruction**:",
        "  #Finally Rewritten Instruction#",
        "#최종 재작성된 지시문#",
    ],
)
def test_final_marker_variants_on_their_own_line(marker):
    answer = f"#Plan#\nDo things.\n{marker}\nSummarize the article in three bullet points."
    assert parse_evolved_instruction(answer).text == "Summarize the article in three bullet points."


@pytest.mark.parametrize(
    "marker",
    ["#Finally Rewritten Instruction#:", "#Finally Rewritten Instruction#", "Final Rewritten Instruction:",
     "**Finally Rewritten Instruction**:"],
)
def test_text_on_the_same_line_as_the_marker(marker):
    answer = f"#Plan#\nDo things.\n{marker} Summarize the article.\nUse three bullet points."
    assert parse_evolved_instruction(answer).text == "Summarize the article.\nUse three bullet points."


def test_last_final_marker_wins():
    answer = (
        "#Finally Rewritten Instruction#\nDraft one.\n\n"
        "On reflection, a better version:\n"
        "#Finally Rewritten Instruction#\nDraft two, improved."
    )
    assert parse_evolved_instruction(answer).text == "Draft two, improved."


def test_marker_mentioned_mid_sentence_is_not_a_marker():
    answer = (
        "#Finally Rewritten Instruction#\n"
        "Explain what the tag '#Rewritten Instruction#' means and why a "
        "'#Finally Rewritten Instruction#' section comes last."
    )
    parsed = parse_evolved_instruction(answer)
    assert parsed.text.startswith("Explain what the tag '#Rewritten Instruction#' means")
    assert parsed.text.endswith("comes last.")


def test_marker_words_in_prose_at_line_start_are_not_a_marker():
    answer = "#Finally Rewritten Instruction#\nList three risks.\nFinal rewritten instructions should be short."
    assert parse_evolved_instruction(answer).text == (
        "List three risks.\nFinal rewritten instructions should be short."
    )


def test_korean_instruction_after_marker():
    answer = "#Finally Rewritten Instruction#\n서울의 역사를 세 문단으로 설명하고, 각 문단에 연도를 포함하세요."
    assert parse_evolved_instruction(answer).text == "서울의 역사를 세 문단으로 설명하고, 각 문단에 연도를 포함하세요."


def test_think_block_is_ignored_before_parsing():
    answer = "<think>\n#Finally Rewritten Instruction#\nA draft in thought\n</think>\n" + FULL_ANSWER
    assert parse_evolved_instruction(answer).text.startswith("Write a four-line poem")


# --- evolved instruction: cleaning -----------------------------------------------------


def test_wrapping_fence_is_stripped():
    answer = "#Finally Rewritten Instruction#\n```\nSort the list and explain each step.\n```"
    assert parse_evolved_instruction(answer).text == "Sort the list and explain each step."


def test_trailing_closing_fence_is_stripped():
    answer = "```\n#Finally Rewritten Instruction#\nSort the list and explain each step.\n```"
    assert parse_evolved_instruction(answer).text == "Sort the list and explain each step."


def test_inner_code_block_is_kept():
    answer = "#Finally Rewritten Instruction#\nFix the bug:\n```python\nprint(1/0)\n```"
    assert parse_evolved_instruction(answer).text == "Fix the bug:\n```python\nprint(1/0)\n```"


def test_wrapping_quotes_are_stripped():
    assert parse_evolved_instruction('#Final Rewritten Instruction#: "Name two rivers."').text == (
        "Name two rivers."
    )
    assert parse_evolved_instruction("Final Rewritten Instruction:\n“두 강의 이름을 쓰세요.”").text == (
        "두 강의 이름을 쓰세요."
    )


def test_quotes_that_do_not_wrap_are_kept():
    answer = '#Finally Rewritten Instruction#\n"Cats" and "dogs": compare them in a table, "briefly"'
    assert parse_evolved_instruction(answer).text == (
        '"Cats" and "dogs": compare them in a table, "briefly"'
    )


def test_trailing_section_is_stripped():
    answer = (
        "#Finally Rewritten Instruction#\nCompare two sorting algorithms.\n\n"
        "#Explanation#\nI added a comparison step."
    )
    assert parse_evolved_instruction(answer).text == "Compare two sorting algorithms."


def test_empty_final_section_gives_none():
    answer = "#Rewritten Instruction#\nSomething\n#Finally Rewritten Instruction#\n```\n```"
    assert parse_evolved_instruction(answer) == ParsedText(None)
    assert parse_evolved_instruction("#Finally Rewritten Instruction#\n   ") == ParsedText(None)


# --- evolved instruction: strict and lenient -------------------------------------------


def test_strict_without_final_marker_gives_none():
    answer = "#Rewritten Instruction#\nWrite a sonnet about the sea, in iambic pentameter."
    assert parse_evolved_instruction(answer) == ParsedText(None)
    assert parse_evolved_instruction(answer, "strict") == ParsedText(None)


def test_lenient_prefers_final_marker_and_is_not_flagged():
    assert parse_evolved_instruction(FULL_ANSWER, "lenient").lenient is False


def test_lenient_takes_text_after_rewritten_marker():
    answer = "#Plan#\nAdd a constraint.\n\n#Rewritten Instruction#\nWrite a sonnet about the sea."
    assert parse_evolved_instruction(answer, "lenient") == ParsedText(
        "Write a sonnet about the sea.", lenient=True
    )


def test_lenient_rewritten_marker_variants():
    answer = "**Rewritten Instruction**: 바다에 관한 소네트를 쓰세요."
    assert parse_evolved_instruction(answer, "lenient") == ParsedText(
        "바다에 관한 소네트를 쓰세요.", lenient=True
    )


def test_lenient_takes_last_substantial_paragraph():
    answer = (
        "I will make the instruction harder.\n\n"
        "Here it is:\n\n"
        "Describe the water cycle and draw a labelled diagram.\n\n"
        "Done!"
    )
    assert parse_evolved_instruction(answer, "lenient") == ParsedText(
        "Describe the water cycle and draw a labelled diagram.", lenient=True
    )


def test_lenient_paragraph_drops_its_header_line():
    answer = "New version:\nDescribe the water cycle in five steps."
    assert parse_evolved_instruction(answer, "lenient").text == "Describe the water cycle in five steps."


def test_lenient_skips_plan_paragraph():
    answer = "Explain how vaccines train the immune system.\n\n#Plan#\nStep 1: add a constraint on length."
    assert parse_evolved_instruction(answer, "lenient").text == (
        "Explain how vaccines train the immune system."
    )


def test_lenient_skips_korean_plan_paragraph():
    answer = "백신이 면역 체계를 훈련시키는 방식을 설명하세요.\n\n#계획#\n1단계: 길이에 대한 조건을 추가한다."
    assert parse_evolved_instruction(answer, "lenient").text == "백신이 면역 체계를 훈련시키는 방식을 설명하세요."


def test_lenient_nothing_substantial_gives_none():
    assert parse_evolved_instruction("OK.\n\nDone!\n\n#Plan#", "lenient") == ParsedText(None)
    assert parse_evolved_instruction("", "lenient") == ParsedText(None)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        parse_evolved_instruction(FULL_ANSWER, "loose")


# --- optimized method ------------------------------------------------------------------

METHOD = "Step 1: List ways to add reasoning depth.\nStep 2: Pick two.\nStep 3: Rewrite."


@pytest.mark.parametrize(
    "opening",
    [
        "```Optimized Method",
        "``` Optimized Method",
        "```optimized method",
        "```Optimized Method:",
        "**Optimized Method**\n```",
        "**Optimized Method**:\n\n```text",
        "### Optimized Method\n```",
    ],
)
def test_optimized_method_fence_variants(opening):
    answer = f"Analysis of the failures...\n\n{opening}\n{METHOD}\n```\nThat is all."
    assert parse_optimized_method(answer) == ParsedText(METHOD)


def test_last_method_block_wins():
    answer = f"```Optimized Method\nOld idea.\n```\nBetter:\n```Optimized Method\n{METHOD}\n```"
    assert parse_optimized_method(answer).text == METHOD


def test_method_keeps_inner_tagged_fence_and_mentions():
    method = (
        "Step 1: Read the #Instruction#.\nStep 2: Output the Optimized Method name.\n"
        "```python\nexample = 1\n```\nStep 3: Finish."
    )
    assert parse_optimized_method(f"```Optimized Method\n{method}\n```").text == method


def test_method_after_think_block():
    answer = f"<think>```Optimized Method\nthinking draft\n```</think>\n```Optimized Method\n{METHOD}\n```"
    assert parse_optimized_method(answer).text == METHOD


def test_strict_method_without_fence_gives_none():
    assert parse_optimized_method(f"Optimized Method:\n{METHOD}") == ParsedText(None)
    assert parse_optimized_method(f"```Optimized Method\n{METHOD}") == ParsedText(None)  # never closed


def test_lenient_method_after_heading():
    long_method = METHOD + "\nStep 4: Check that every added constraint is concrete."
    answer = f"Some analysis first.\n\n## Optimized Method\n{long_method}"
    assert parse_optimized_method(answer, "lenient") == ParsedText(long_method, lenient=True)


def test_lenient_method_unclosed_fence_is_taken_to_the_end():
    long_method = METHOD + "\nStep 4: Check that every added constraint is concrete."
    assert parse_optimized_method(f"```Optimized Method\n{long_method}", "lenient") == ParsedText(
        long_method, lenient=True
    )


def test_lenient_method_whole_answer():
    answer = METHOD + "\nStep 4: Check that every added constraint is concrete and testable."
    assert parse_optimized_method(answer, "lenient") == ParsedText(answer, lenient=True)


def test_lenient_method_too_short_gives_none():
    assert parse_optimized_method("Step 1: Make it harder.", "lenient") == ParsedText(None)
    assert parse_optimized_method("Optimized Method:\nMake it harder.", "lenient") == ParsedText(None)


# --- issue 14: marker variants, trailing commentary, fence spellings ----------------------


@pytest.mark.parametrize("marker", ["#Final Refined Instruction#", "**Final Refined Instruction**:",
                                    "### Final Evolved Instruction", "Finally Rewritten Instruction:"])
@pytest.mark.parametrize("instruction", ["Summarize the article in three bullet points.",
                                         "기사를 세 개의 글머리표로 요약하고 각 항목에 근거를 다세요."])
def test_every_design_marker_variant_is_accepted(marker, instruction):
    answer = f"#Plan#\nDo things.\n#Rewritten Instruction#\nDraft.\n{marker}\n{instruction}"
    assert parse_evolved_instruction(answer).text == instruction


@pytest.mark.parametrize("remark", [
    "Note: I added a constraint on the number of bullet points.",
    "**Explanation:** I've made the task require evidence.",
    "(I added a length limit to make it harder.)",
    "This rewritten instruction adds a requirement for sources.",
    "참고: 근거를 요구하는 조건을 추가했습니다.",
    "설명: 이 지시문은 근거 제시를 요구하도록 바뀌었습니다.",
    "이 지시문은 원래보다 더 구체적입니다.",
])
@pytest.mark.parametrize("instruction", ["Summarize the article in three bullet points.",
                                         "기사를 세 개의 글머리표로 요약하세요."])
def test_trailing_commentary_about_the_rewrite_is_cut(remark, instruction):
    # Only as the final paragraph: a remark line inside the instruction's paragraph, or one that
    # more text follows, is kept (tests/unit/test_parsing_keeps_text.py).
    for gap, tail in (("\n\n", ""), ("\n \n\n", "\n"), ("\n\n", "\n\n(I also made the task require one more step.)")):
        answer = f"#Finally Rewritten Instruction#\n{instruction}{gap}{remark}{tail}"
        assert parse_evolved_instruction(answer).text == instruction


@pytest.mark.parametrize("instruction", [
    "Write a haiku about rain.\nNote: the haiku must not mention the sky.",
    "비에 관한 하이쿠를 쓰세요.\n참고: 하늘은 언급하지 마세요.",
    "Translate the text below.\n\nI added sugar to the tea and then left.",
])
def test_a_note_that_belongs_to_the_instruction_is_kept(instruction):
    assert parse_evolved_instruction(f"#Finally Rewritten Instruction#\n{instruction}").text == instruction


def test_commentary_on_the_marker_line_instruction_is_cut_after_it():
    # "Note: I made it shorter." is kept now: a user's own note may say that of their text.
    answer = "#Finally Rewritten Instruction#: Summarize the report.\n\nNote: I made the instruction shorter."
    assert parse_evolved_instruction(answer).text == "Summarize the report."


def test_lenient_fallback_skips_a_trailing_remark_paragraph():
    answer = "Explain how vaccines train the immune system, with one example.\n\nNote: I added an example requirement."
    assert parse_evolved_instruction(answer, "lenient").text == (
        "Explain how vaccines train the immune system, with one example.")


KOREAN_METHOD = "1단계: 지시문을 더 어렵게 만드는 방법을 나열합니다.\n2단계: 두 가지를 고릅니다.\n#Finally Rewritten Instruction# 아래에 최종 지시문만 씁니다."


@pytest.mark.parametrize("opening", ["```\nOptimized Method:", "```\n**Optimized Method**", "```text\nOptimized Method",
                                     "```\n### Optimized Method", "```\n최적화된 방법:"])
@pytest.mark.parametrize("method", [METHOD, KOREAN_METHOD])
def test_fence_on_its_own_line_with_the_label_below(opening, method):
    answer = f"I changed two steps.\n\n{opening}\n{method}\n```\nThat is all."
    assert parse_optimized_method(answer) == ParsedText(method)


def test_a_plain_code_block_without_the_label_is_no_method():
    answer = f"Here is an example:\n```\n{METHOD}\n```"
    assert parse_optimized_method(answer).text is None
