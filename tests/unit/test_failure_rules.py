"""Tests for failure_checks/rules.py and the default rules/failure_rules.yaml."""

import textwrap

import pytest

from failure_checks.rules import DEFAULT_RULES_PATH, Failure, FailureRules, hangul_ratio
from failure_checks.markers import ParsedText

EN_ORIGINAL = "Write a short poem about the ocean."
KO_ORIGINAL = "바다에 관한 짧은 시를 써 주세요."
EN_EVOLVED = "Write a four-line poem about the ocean at night, using at least one metaphor."
KO_EVOLVED = "밤바다를 주제로 은유를 하나 이상 사용한 네 줄짜리 시를 써 주세요."


@pytest.fixture(scope="module")
def rules():
    return FailureRules.load()


def evolution_reason(rules, original, evolved):
    failure = rules.check_evolution(original, ParsedText(evolved))
    return failure.reason if failure else None


def response_reason(rules, response):
    failure = rules.check_response(response)
    return failure.reason if failure else None


# --- hangul_ratio ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0.0),
        ("123 !?", 0.0),  # no letters at all
        ("abc", 0.0),
        ("가나다", 1.0),
        ("안녕 hi", 0.5),  # 2 Hangul of 4 letters
        ("ㅋㅋ ok!", 0.5),  # compatibility jamo count as Hangul
        ("한 abc", 0.25),
        ("漢字한", 1 / 3),  # Han ideographs are letters but not Hangul
    ],
)
def test_hangul_ratio(text, expected):
    assert hangul_ratio(text) == pytest.approx(expected)


# --- good evolutions pass --------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "evolved"),
    [(EN_ORIGINAL, EN_EVOLVED), (KO_ORIGINAL, KO_EVOLVED), ("12 * 7 = ?", "12 * 7을 계산하고 과정을 설명하세요.")],
)
def test_good_evolution_passes(rules, original, evolved):
    assert rules.check_evolution(original, ParsedText(evolved)) is None


def test_lenient_parse_is_judged_like_any_other(rules):
    assert rules.check_evolution(EN_ORIGINAL, ParsedText(EN_EVOLVED, lenient=True)) is None


# --- unparseable and empty -------------------------------------------------------------


def test_unparseable(rules):
    assert rules.check_evolution(EN_ORIGINAL, ParsedText(None)).reason == "unparseable"


@pytest.mark.parametrize("evolved", ["   ", "...", "?!", "``` ```", "—…"])
def test_empty(rules, evolved):
    assert evolution_reason(rules, EN_ORIGINAL, evolved) == "empty"


def test_single_word_is_not_empty(rules):
    assert evolution_reason(rules, "Say hi", "Say hello to three friends in Korean and English.") is None


# --- runaway_length --------------------------------------------------------------------


def test_runaway_length_relative_to_original(rules):
    original = ("Explain recursion with an example. " * 10).strip()  # 349 chars
    evolved = "Explain recursion thoroughly with many examples. " * 30  # ~1470 chars > 4 x 349
    failure = rules.check_evolution(original, ParsedText(evolved))
    assert failure.reason == "runaway_length"
    assert failure.detail.endswith("(limit 1396)")


def test_short_original_may_grow_by_the_slack(rules):
    evolved = "Say hello to three friends, " + "each in a different language and register, " * 8
    assert len(evolved) < 400 + len("Say hi")
    assert evolution_reason(rules, "Say hi", evolved) is None


def test_runaway_length_absolute_cap(rules):
    original = "한국 경제의 성장 과정을 설명하세요. " * 60  # ~1200 chars, 4x would allow 4800
    evolved = "한국 경제의 성장 과정을 시대별로 자세히 설명하고 근거를 제시하세요. " * 110
    assert len(evolved) > 4000
    assert evolution_reason(rules, original, evolved) == "runaway_length"


def test_long_growth_within_limits_passes(rules):
    original = "한국 경제의 성장 과정을 설명하세요. " * 20
    evolved = "한국 경제의 성장 과정을 시대별로 자세히 설명하고 근거를 제시하세요. " * 30
    assert evolution_reason(rules, original, evolved) is None


# --- unchanged -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "evolved"),
    [
        (EN_ORIGINAL, "  write a SHORT poem   about the ocean. "),
        (EN_ORIGINAL, "Write a short poem about the ocean!"),
        (KO_ORIGINAL, "바다에 관한 짧은 시를 써 주세요!"),
    ],
)
def test_unchanged(rules, original, evolved):
    assert evolution_reason(rules, original, evolved) == "unchanged"


@pytest.mark.parametrize(
    ("original", "evolved"),
    [
        (EN_ORIGINAL, "Write a short poem about the oceans."),
        (
            "바다에 관한 짧은 시를 써 주세요. 제목도 붙여 주세요. 그리고 세 줄로 써 주세요.",
            "바다에 관한 짧은 시를 써 주세요. 제목도 붙여 주세요. 그리고 네 줄로 써 주세요.",
        ),
    ],
)
def test_near_copy_is_unchanged(rules, original, evolved):
    failure = rules.check_evolution(original, ParsedText(evolved))
    assert failure.reason == "unchanged"
    assert failure.detail.startswith("similarity 0.9")


def test_small_real_change_is_not_unchanged(rules):
    assert evolution_reason(rules, EN_ORIGINAL, "Write a short poem about the ocean in haiku form.") is None
    assert evolution_reason(rules, KO_ORIGINAL, "바다에 관한 짧은 시를 하이쿠 형식으로 써 주세요.") is None


# --- prompt_leak -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "evolved",
    [
        "#Rewritten Instruction# Write a four-line poem about the ocean at night.",
        "Rewrite the given prompt so that the poem has four lines about the ocean.",
        "Following the #Plan#, write a four-line poem about the ocean at night.",
        "Based on the given instruction, write a four-line poem about the ocean.",
    ],
)
def test_prompt_leak_english(rules, evolved):
    assert evolution_reason(rules, EN_ORIGINAL, evolved) == "prompt_leak"


@pytest.mark.parametrize(
    "evolved",
    [
        "주어진 프롬프트에 따라 밤바다에 관한 네 줄짜리 시를 써 주세요.",
        "재작성된 지시: 밤바다에 관한 네 줄짜리 시를 써 주세요.",
        "#계획#에 따라 밤바다에 관한 네 줄짜리 시를 써 주세요.",
    ],
)
def test_prompt_leak_korean(rules, evolved):
    assert evolution_reason(rules, KO_ORIGINAL, evolved) == "prompt_leak"


def test_leak_phrase_already_in_original_is_not_a_leak(rules):
    original = "For the given prompt below, list three ways a chatbot could misread it."
    evolved = "For the given prompt below, list three ways a chatbot could misread it and rank them by harm."
    assert evolution_reason(rules, original, evolved) is None
    ko_original = "주어진 프롬프트의 문제점을 찾아 주세요."
    ko_evolved = "주어진 프롬프트의 문제점을 세 가지 찾고, 각각의 개선안을 제시해 주세요."
    assert evolution_reason(rules, ko_original, ko_evolved) is None


def test_leak_word_inside_another_word_is_not_a_leak(rules):
    evolved = "Write a four-line poem about the ocean, forgiven promptly by the tide."
    assert evolution_reason(rules, EN_ORIGINAL, evolved) is None


# --- answered_instead ------------------------------------------------------------------


@pytest.mark.parametrize(
    "evolved",
    [
        "Sure! The waves roll in, the moon hangs low, the tide keeps time.",
        "**Certainly.** Waves roll in beneath the silver moon tonight.",
        "Here is the answer: waves roll in beneath the moon.",
        "Here's my response: the waves roll in beneath the moon.",
        "Answer: Waves roll in beneath the silver moon.",
        "The answer is 84, because 12 times 7 equals 84.",
    ],
)
def test_answered_instead_english(rules, evolved):
    assert evolution_reason(rules, EN_ORIGINAL, evolved) == "answered_instead"


@pytest.mark.parametrize(
    "evolved",
    [
        "물론입니다! 파도가 밀려오고 달빛이 바다 위에 흐릅니다.",
        "네, 파도가 밀려오고 달빛이 바다 위에 흐릅니다.",
        "답변: 파도가 밀려오고 달빛이 바다 위에 흐릅니다.",
        "다음은 요청하신 시에 대한 답변입니다. 파도가 밀려오고 달빛이 흐릅니다.",
    ],
)
def test_answered_instead_korean(rules, evolved):
    assert evolution_reason(rules, KO_ORIGINAL, evolved) == "answered_instead"


@pytest.mark.parametrize(
    ("original", "evolved"),
    [
        ("Find the bug in this function.", "Here is a Python function that sums a list. Find the off-by-one bug."),
        ("Summarize the report.", "Surely you can summarize the report in three sentences for a CEO?"),
        ("보고서를 요약하세요.", "다음은 회사의 분기 보고서입니다. 핵심 내용을 세 문장으로 요약하고 답하세요."),
        ("네덜란드에 대해 설명하세요.", "네덜란드의 역사와 경제를 각각 한 문단으로 설명하세요."),
    ],
)
def test_instruction_openers_are_not_answers(rules, original, evolved):
    assert evolution_reason(rules, original, evolved) is None


def test_answer_opener_already_in_original_is_allowed(rules):
    original = "Sure or not sure: decide whether the statement is certain."
    evolved = "Sure or not sure: decide whether each of three statements is certain, and justify it."
    assert evolution_reason(rules, original, evolved) is None


# --- language_changed ------------------------------------------------------------------


def test_korean_in_english_out(rules):
    failure = rules.check_evolution(KO_ORIGINAL, ParsedText(EN_EVOLVED))
    assert failure == Failure("language_changed", "hangul ratio 1.00 -> 0.00")


def test_english_in_korean_out(rules):
    failure = rules.check_evolution(EN_ORIGINAL, ParsedText(KO_EVOLVED))
    assert failure.reason == "language_changed"
    assert failure.detail.startswith("hangul ratio 0.00 -> ")


def test_korean_with_some_english_terms_is_kept(rules):
    evolved = "밤바다를 주제로 metaphor와 simile을 하나씩 사용한 네 줄짜리 시를 써 주세요."
    assert evolution_reason(rules, KO_ORIGINAL, evolved) is None


def test_english_with_a_korean_word_is_kept(rules):
    evolved = "Write a four-line poem about the ocean at night and title it 바다."
    assert evolution_reason(rules, EN_ORIGINAL, evolved) is None


# --- order of evolution checks ---------------------------------------------------------


def test_order_runaway_before_leak(rules):
    evolved = "#Plan# " + "Write a much longer poem about the ocean. " * 120
    assert evolution_reason(rules, EN_ORIGINAL, evolved) == "runaway_length"


def test_order_unchanged_before_language(rules):
    # An exact copy of a Korean original is "unchanged", never "language_changed".
    assert evolution_reason(rules, KO_ORIGINAL, KO_ORIGINAL) == "unchanged"


def test_order_leak_before_answered_before_language(rules):
    assert evolution_reason(rules, KO_ORIGINAL, "Sure, here is the rewritten instruction: write a poem.") == (
        "prompt_leak"
    )
    assert evolution_reason(rules, KO_ORIGINAL, "Sure! Waves roll in beneath the silver moon tonight.") == (
        "answered_instead"
    )


# --- check_response --------------------------------------------------------------------


@pytest.mark.parametrize("response", ["", "   \n", "...", "😊"])
def test_empty_response(rules, response):
    assert response_reason(rules, response) == "empty_response"


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("Sure! Could you tell me more about the poem you want?", "asks_back"),
        ("Understood. What tone should the poem have？", "asks_back"),
        ("**Thank you!** Which ocean do you mean? 😊", "asks_back"),
        ("I'm sorry, but which report are you referring to?", "asks_back"),
        ("What kind of poem would you like?", "asks_back"),
        ("Before I answer, could you tell me what your budget is?", "asks_back"),
        ("To write a good poem, please provide the theme and the length you want.", "asks_back"),
        ("I can help with that. Please specify which programming language you use.", "asks_back"),
        ("Here is a general outline. Could you provide the company's revenue figures so I can refine it?",
         "asks_for_input"),
        ("Paste the code here and I'll find the bug for you.", "asks_for_input"),
        ("It looks like the article wasn't attached. Summaries need the source.", "asks_for_input"),
        ("I cannot write a poem about an ocean I have never seen.", "claims_impossible"),
        ("I can’t access the report you mention.", "claims_impossible"),
        ("It is not possible to determine the answer from the information given.", "claims_impossible"),
        ("As an AI language model, I don't have personal opinions, so I can't pick a party for you.", "refuses"),
        ("I'm not able to help with entering someone else's home without permission.", "refuses"),
    ],
)
def test_failed_responses_english(rules, response, reason):
    assert response_reason(rules, response) == reason


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("네, 알겠습니다. 어떤 분위기의 시를 원하시나요?", "asks_back"),
        ("알겠습니다! 시의 길이는 어느 정도가 좋을까요？", "asks_back"),
        ("죄송하지만, 어떤 보고서를 말씀하시는 건가요?", "asks_back"),
        ("흥미로운 주제네요. 이 보고서를 읽을 대상은 누구인가요?", "asks_back"),
        ("시를 쓰려면 원하는 주제와 길이를 알려주세요.", "asks_back"),
        ("코드를 붙여 넣어 주시면 오류를 찾아 드릴게요.", "asks_for_input"),
        ("번역할 문장을 입력해 주세요.", "asks_for_input"),
        ("보고서 내용을 제공해 주시면 요약해 드리겠습니다.", "asks_for_input"),
        ("정확한 답변을 위해 더 자세한 정보가 필요합니다.", "asks_for_input"),
        ("주어진 정보만으로는 정확한 계산이 불가능합니다.", "claims_impossible"),
        ("죄송하지만 해당 파일에 접근할 수 없습니다.", "claims_impossible"),
        ("AI 언어 모델로서 저는 개인적인 의견을 가질 수 없습니다.", "refuses"),
        ("죄송하지만 그 요청은 도와드릴 수 없습니다.", "refuses"),
    ],
)
def test_failed_responses_korean(rules, response, reason):
    assert response_reason(rules, response) == reason


@pytest.mark.parametrize(
    "response",
    [
        # A quoted request inside a template is the product, not a request to the user.
        '고객 응대 문구입니다.\n> "안녕하세요, 고객님. 주문 번호를 알려주세요."\n상황에 맞게 이름을 바꿔 쓰세요.',
        '첫 응대로는 "주문 번호를 알려주세요."라고 말하면 됩니다.',
        "```python\nname = input(\"Please enter your name: \")\n```\nThe loop keeps asking until a name is given.",
        # List items that end in questions are the product too (slogans, interview questions).
        "1. 선이 없으니 자유로워졌습니다. 당신의 음악은 아직도 묶여 있나요?\n2. 이제 더 좋은 소리로 바꿔 볼까요?",
        # A plain-speech question speaks to someone else (a child), not to the user.
        "지구는 팽이처럼 돌고 있어. 그래서 밤이 오는 거야. 신기하지?",
        # Impossibility as the topic of a substantial answer.
        "페르마의 마지막 정리는 n이 3 이상일 때 xⁿ + yⁿ = zⁿ을 만족하는 양의 정수 해가 없다는 명제입니다. "
        "즉, 이런 해를 찾는 것은 불가능합니다. 페르마는 증명을 남기지 않았고, 이 문제는 타원곡선과 모듈러 형식의 "
        "깊은 연결을 필요로 했습니다. 결국 1994년 앤드루 와일스가 타니야마-시무라 추측의 일부를 증명해 정리를 완성했습니다.",
        "Fermat's Last Theorem says that for n greater than 2 it is impossible to find positive whole numbers with "
        "xⁿ + yⁿ = zⁿ. Fermat claimed a proof in a margin around 1637, but none was found. The proof needed deep links "
        "between elliptic curves and modular forms, and Andrew Wiles completed it in 1994 after seven years of work.",
        "대한민국의 수도는 서울입니다.",
        "좋은 질문입니다! 아침형 습관은 취침 시간부터 고정하고, 15분씩 앞당기고, 알람을 멀리 두고, 기상 직후 햇빛을 "
        "보는 것으로 만듭니다. 처음 2주가 가장 힘들지만 그 시기를 넘기면 훨씬 수월해집니다.",
    ],
)
def test_hard_negatives_pass(rules, response):
    assert rules.check_response(response) is None


LONG_KOREAN_ANSWER = (
    "재귀 함수란 무엇일까요? 재귀 함수는 자기 자신을 호출하는 함수입니다. "
    "예를 들어 팩토리얼은 n! = n × (n-1)! 로 정의할 수 있으며, 0! = 1 이 종료 조건이 됩니다. "
    "재귀를 사용할 때는 반드시 종료 조건을 두어야 하며, 그렇지 않으면 스택 오버플로가 발생합니다. "
    "또한 같은 계산을 반복하는 경우에는 메모이제이션을 함께 사용하면 성능이 크게 좋아집니다. "
    "반복문으로 바꿀 수 있는 경우도 많지만, 트리 탐색처럼 구조가 재귀적인 문제에서는 재귀가 더 읽기 쉽습니다. "
    "다만 파이썬은 기본 재귀 깊이 제한이 있어 매우 깊은 재귀는 이 방법으로 처리할 수 없습니다."
)

LONG_ENGLISH_ANSWER = (
    "Great question! Photosynthesis turns light into chemical energy. In the light-dependent "
    "reactions, chlorophyll absorbs photons and splits water, releasing oxygen. The energy is "
    "stored in ATP and NADPH, which power the Calvin cycle, where carbon dioxide is fixed into "
    "sugars. Why does this matter? Nearly every food chain starts here. I cannot stress enough "
    "how central this process is to life on Earth, and that is the short version of it."
)


@pytest.mark.parametrize(
    "response",
    [
        LONG_KOREAN_ANSWER,
        LONG_ENGLISH_ANSWER,
        "Sure! Here is the poem:\n\nWaves fold in silver light,\nthe moon keeps time all night.",
        "네, 다음은 요청하신 시입니다.\n\n파도가 밀려오고\n달빛이 흐른다.",
        "Certainly. " + "The ocean covers most of the planet and shapes its climate. " * 12
        + "Would you like a version for children?",
        "What a lovely request. Waves fold in silver light; the moon keeps time all night.",
    ],
)
def test_good_responses_pass(rules, response):
    assert rules.check_response(response) is None


def test_response_detail_names_the_sentence(rules):
    failure = rules.check_response("Sure! Could you tell me more?")
    assert failure == Failure("asks_back", "Could you tell me more?")


# --- loading custom and broken YAML ----------------------------------------------------


def write(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_custom_yaml_adds_a_reason(tmp_path):
    path = write(
        tmp_path,
        """
        evolution:
          thresholds:
            max_chars: 100
          rules:
            - reason: mentions_chatgpt
              description: the data must not name a vendor
              contains: ["chatgpt", "챗GPT"]
        response:
          rules:
            - reason: too_polite
              starts_with: ["dear user"]
              ends_with: ["regards."]
        """,
    )
    rules = FailureRules.load(path)
    assert rules.thresholds.max_chars == 100
    assert rules.thresholds.length_ratio_max == 4.0  # omitted thresholds keep their default
    failure = rules.check_evolution(EN_ORIGINAL, ParsedText("Ask ChatGPT to write a poem about the ocean."))
    assert failure == Failure("mentions_chatgpt", 'contains "chatgpt"')
    assert evolution_reason(rules, KO_ORIGINAL, "챗GPT에게 바다에 관한 시를 써 달라고 하세요.") == "mentions_chatgpt"
    assert response_reason(rules, "Dear user, here is your poem. Kind regards.") == "too_polite"
    assert response_reason(rules, "Dear user, here is your poem.") is None


def test_within_first_and_max_length_options(tmp_path):
    path = write(
        tmp_path,
        """
        response:
          rules:
            - reason: early_no
              within_first: 10
              regex: ["\\\\bno\\\\b"]
            - reason: short_hmm
              max_length: 20
              contains: ["hmm"]
        """,
    )
    rules = FailureRules.load(path)
    assert response_reason(rules, "No, that is wrong.") == "early_no"
    assert response_reason(rules, "That is wrong, no.") is None
    assert response_reason(rules, "Hmm, let me think.") == "short_hmm"
    assert response_reason(rules, "Hmm, let me think about this for a while.") is None


def test_empty_file_gives_only_built_in_checks(tmp_path):
    rules = FailureRules.load(write(tmp_path, ""))
    assert rules.check_response("I cannot do that.") is None
    assert rules.check_response("") == Failure("empty_response", "no letters or digits")


def test_load_accepts_str_path(tmp_path):
    path = write(tmp_path, "response: {rules: []}\n")
    assert FailureRules.load(str(path)).response_rules == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("evolution: [unclosed\n", "invalid YAML"),
        ("- just a list\n", "top level: expected a mapping"),
        ("responses: {}\n", "unknown key 'responses'"),
        ("evolution: {thresholds: {max_char: 5}}\n", "unknown key 'max_char'"),
        ("evolution: {thresholds: {max_chars: lots}}\n", "evolution.thresholds.max_chars"),
        ("response: {rules: [{contains: [x]}]}\n", "response.rules[0]: needs a snake_case 'reason'"),
        ("response: {rules: [{reason: Bad Name, contains: [x]}]}\n", "needs a snake_case 'reason'"),
        ("response: {rules: [{reason: r1, startswith: [x]}]}\n", "response.rules[0] (r1): unknown key 'startswith'"),
        ("response: {rules: [{reason: r1, regex: ['(unclosed']}]}\n", "response.rules[0] (r1): bad regex"),
        ("response: {rules: [{reason: r1, description: only words}]}\n", "needs at least one of"),
        ("response: {rules: [{reason: r1, contains: []}]}\n", "non-empty list"),
        ("response: {rules: [{reason: r1, contains: [x], within_first: -3}]}\n", "within_first"),
        ("response: {rules: [{reason: r1, contains: [x], unless_in_original: true}]}\n", "unknown key"),
        ("evolution: {rules: [{reason: r1, contains: [x], unless_in_original: maybe}]}\n", "true or false"),
    ],
)
def test_malformed_yaml_names_file_and_problem(tmp_path, text, problem):
    path = write(tmp_path, text, name="broken_rules.yaml")
    with pytest.raises(ValueError) as error:
        FailureRules.load(path)
    message = str(error.value)
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


def test_missing_file_gives_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read rules file"):
        FailureRules.load(tmp_path / "missing.yaml")


def test_default_file_loads_with_all_documented_reasons(rules):
    evolution_reasons = {rule.reason for rule in rules.evolution_rules}
    response_reasons = {rule.reason for rule in rules.response_rules}
    assert evolution_reasons == {"prompt_leak", "answered_instead"}
    assert response_reasons == set()  # answers are read by grammar (response.grammar), not phrases
    assert rules.response_grammar is not None and rules.evolution_grammar is not None


# --- grammar and script sections --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("response: {grammar: {substance_max: 5}}\n", "response.grammar: unknown key 'substance_max'"),
        ("response: {grammar: {substance_max_chars: many}}\n", "response.grammar.substance_max_chars"),
        ("response: {grammar: {inability: ['(unclosed']}}\n", "response.grammar.inability: bad regex"),
        ("evolution: {grammar: {ignore_words: []}}\n", "evolution.grammar.ignore_words: expected a non-empty list"),
        ("script: {mixed_script_min_chars: -1}\n", "script.mixed_script_min_chars"),
    ],
)
def test_malformed_grammar_names_file_and_key(tmp_path, text, problem):
    path = write(tmp_path, text, name="broken_grammar.yaml")
    with pytest.raises(ValueError) as error:
        FailureRules.load(path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_grammar_is_tuned_in_the_rules_file(tmp_path):
    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    assert "substance_max_chars: 120" in text
    path = tmp_path / "strict.yaml"
    path.write_text(text.replace("substance_max_chars: 120", "substance_max_chars: 0"), encoding="utf-8")
    answer = "Here is a day-by-day plan for your whole trip across the country. Which city do you mean?"
    assert response_reason(FailureRules.load(), answer) == "asks_back"
    assert response_reason(FailureRules.load(path), answer) is None  # any substance now outweighs the question


def test_without_grammar_sections_only_phrases_judge(tmp_path):
    rules = FailureRules.load(write(tmp_path, "response: {rules: []}\n"))
    assert rules.check_response("번역할 문장을 입력해 주세요.") is None
    assert rules.check_evolution("Explain recursion.", ParsedText("Please explain recursion.")) is None


@pytest.mark.parametrize(
    ("instruction", "answer"),
    [
        ("Write a knock knock joke about bananas.", "Knock, knock!\nWho's there?\nBanana.\nBanana who?"),
        ("Create a fun math question for children.", "I am an odd number. Take away one letter and I become even. What number am I?"),
        ("Write a list of questions to start a conversation.", "How are you today? What are your plans for the weekend?"),
        ("아이들을 위한 수수께끼를 하나 만들어 주세요.", "다리는 네 개인데 걷지 못하는 것은 무엇일까요?"),
    ],
)
def test_asked_for_questions_are_the_answer(rules, instruction, answer):
    assert rules.check_response(answer, instruction) is None
    assert rules.check_response(answer) is not None  # without the instruction they read as asking back


def test_a_refusal_still_counts_when_questions_were_asked_for(rules):
    answer = "I'm sorry, but I can't help with writing interview questions designed to trick candidates."
    assert rules.check_response(answer, "Write interview questions that trick candidates.").reason == "refuses"


def test_cannot_help_but_is_not_a_refusal(rules):
    assert rules.check_response("I am like a moth to a flame; I can't help but be drawn to her.") is None
