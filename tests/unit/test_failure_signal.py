"""The failure signal measured on the committed corpus, and the evaluate / classify commands.

The floors sit slightly below what the default rules reach (README of tests/data/failure_corpus), so a
rules change that makes the optimizer's eyesight worse fails here instead of passing silently.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from failure_checks.classify import read_lines, rules_detector
from failure_checks.evaluate import CORPUS_DIR, score, standard_slices
from failure_checks.markers import ParsedText
from failure_checks.rules import FailureRules

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rules():
    return FailureRules.load()


@pytest.fixture(scope="module")
def response_scores(rules):
    items = read_lines(CORPUS_DIR / "responses.jsonl", labeled=True)
    return score(items, rules_detector(rules, "responses"), standard_slices)


@pytest.fixture(scope="module")
def evolution_scores(rules):
    items = read_lines(CORPUS_DIR / "evolutions.jsonl", labeled=True)
    return score(items, rules_detector(rules, "evolutions"), standard_slices)


def test_corpus_is_large_balanced_and_split():
    responses = read_lines(CORPUS_DIR / "responses.jsonl", labeled=True)
    pairs = read_lines(CORPUS_DIR / "evolutions.jsonl", labeled=True)
    assert len(responses) + len(pairs) >= 400
    for items in (responses, pairs):
        by_lang = {lang: sum(1 for i in items if i["lang"] == lang) for lang in ("ko", "en")}
        assert abs(by_lang["ko"] - by_lang["en"]) <= 2
        assert {i["split"] for i in items} == {"tune", "holdout"}
        assert len({i["id"] for i in items}) == len(items)
    assert {i["label"] for i in responses} == {"ok", "asks_back", "asks_for_input", "refuses", "claims_impossible",
                                               "off_topic"}
    assert {i["label"] for i in pairs} == {"ok", "answered_instead", "unanswerable", "contradictory",
                                           "answer_leaked", "lost_content", "irrelevant_addition", "copied"}


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_response_rules_floor_per_language(response_scores, lang):
    precision, recall = response_scores[lang].failure_precision_recall()
    assert precision >= 0.95 and recall >= 0.85, (precision, recall)


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_response_rules_floor_on_the_holdout(response_scores, lang):
    precision, recall = response_scores[f"{lang}/holdout"].failure_precision_recall()
    assert precision >= 0.9 and recall >= 0.8, (precision, recall)


@pytest.mark.parametrize("label", ["answered_instead", "copied", "lost_content"])
def test_evolution_rules_floor_for_text_decidable_classes(evolution_scores, label):
    _, recall = evolution_scores["all"].class_precision_recall(label)
    assert recall >= 0.9, recall
    precision, _ = evolution_scores["all"].failure_precision_recall()
    assert precision >= 0.95


def test_no_good_evolution_is_flagged(evolution_scores):
    assert evolution_scores["all"].class_precision_recall("ok")[1] == 1.0


# --- the commands ------------------------------------------------------------------------------


def run_module(module, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_evaluate_prints_the_table():
    result = run_module("failure_checks.evaluate", str(CORPUS_DIR / "responses.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "== responses.jsonl: rules" in result.stdout
    assert "ko/holdout" in result.stdout and "confusion" in result.stdout
    assert "asks_for_input" in result.stdout


def test_classify_adds_failure_to_every_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        {"id": 1, "response": "번역할 문장을 입력해 주세요.", "extra": "kept"},
        {"id": 2, "instruction": "Name a moon of Mars.", "response": "Phobos is one of the two moons of Mars."},
        {"id": 3, "response": "Before I answer, could you tell me what your budget is?"},
    ]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    result = run_module("failure_checks.classify", "--responses", str(path))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["failure"] for o in out] == ["asks_for_input", None, "asks_back"]
    assert out[0]["extra"] == "kept" and out[1]["instruction"] == "Name a moon of Mars."
    assert path.read_text(encoding="utf-8").count("failure") == 0  # the input is never rewritten


def test_classify_evolutions(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs = [
        {"original": "Explain recursion.", "evolved": "Please explain recursion."},
        {"original": "Explain recursion.", "evolved": "Explain recursion with the factorial function and its base case."},
        {"original": "What is 12 times 7?", "evolved": "12 times 7 equals 84."},
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    result = run_module("failure_checks.classify", "--evolutions", str(path))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["failure"] for line in result.stdout.splitlines()] == ["copied", None, "answered_instead"]


@pytest.mark.parametrize(
    ("text", "flag", "problem"),
    [
        ('{"response": "fine"}\nnot json\n', "--responses", ":2: not JSON"),
        ('{"instruction": "x"}\n', "--responses", ":1: field 'response' is missing"),
        ('{"original": "x"}\n', "--evolutions", ":1: field 'evolved' is missing"),
        ('["a list"]\n', "--responses", ":1: expected a JSON object"),
    ],
)
def test_classify_bad_input_is_one_line(tmp_path, text, flag, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    result = run_module("failure_checks.classify", flag, str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0] and problem in lines[0]


# --- script drift (issue 19, item 5) ------------------------------------------------------------

KO_INSTRUCTION = "서울의 대표적인 관광지 세 곳을 소개하세요."


@pytest.mark.parametrize(
    "answer",
    [
        "서울의 대표 관광지로는 경복궁, 남산타워, 그리고 北村 한옥마을이 있습니다. 각각 역사와 전망을 즐길 수 있습니다.",
        "첫째, 경복궁은 조선의 正宮으로 가장 큰 궁궐입니다. 둘째, 남산서울타워에서 도시 전경을 볼 수 있습니다.",
        "경복궁은 아름답습니다。とても有名な場所です。",
    ],
)
def test_han_or_kana_in_a_korean_answer_is_mixed_script(rules, answer):
    assert rules.check_response(answer, KO_INSTRUCTION).reason == "mixed_script"
    assert rules.check_response(answer).reason == "mixed_script"  # without the instruction too


def test_han_in_the_source_is_not_drift(rules):
    instruction = "다음 한자 성어 '温故知新'의 뜻을 설명하세요."
    answer = "温故知新은 옛것을 익히고 새것을 안다는 뜻입니다. 배움의 태도를 말할 때 자주 쓰입니다."
    assert rules.check_response(answer, instruction) is None
    assert rules.check_evolution(instruction, ParsedText(
        "한자 성어 '温故知新'의 뜻을 설명하고, 이 말을 활용한 예문을 두 개 만드세요.")) is None


def test_an_asked_for_language_is_not_drift(rules):
    assert rules.check_response("これはペンです。", "다음 문장을 일본어로 번역하세요: 이것은 펜입니다.") is None
    assert rules.check_response("这是我的书。", "Translate into Chinese: This is my book.") is None


def test_mixed_script_in_an_evolution(rules):
    evolved = "서울의 대표적인 관광지 세 곳을 소개하고, 각 장소의 歷史的 배경을 한 문장씩 덧붙이세요."
    assert rules.check_evolution(KO_INSTRUCTION, ParsedText(evolved)).reason == "mixed_script"
    english = "Describe three famous sights in Seoul, including 景福宮, and give one fact about each."
    assert rules.check_evolution("Describe famous sights in Seoul.", ParsedText(english)).reason == "mixed_script"


def test_one_han_character_stays_below_the_threshold(rules):
    assert rules.check_response("경복궁은 조선 왕조의 법궁입니다. 근정전이 중심 건물이며 1395년에 지어졌습니다.") is None


@pytest.mark.parametrize(
    "answer",
    [
        "경복궁은 조선의 \ufffd\ufffd궁입니다.",
        "The caf\ufffd is open until nine.",
        "The cafÃ© is open until nine, and the crÃ¨me brÃ»lÃ©e is excellent.",
        "ì•ˆë…•í•˜ì„¸ìš” is how you say hello.",
    ],
)
def test_broken_text_in_answers(rules, answer):
    assert rules.check_response(answer).reason == "broken_text"


def test_broken_text_in_an_evolution_comes_first(rules):
    evolved = "서울의 관광지 세 곳을 소개하고 \ufffd 각 장소의 역사를 설명하세요."
    assert rules.check_evolution(KO_INSTRUCTION, ParsedText(evolved)).reason == "broken_text"


@pytest.mark.parametrize(
    "answer",
    [
        "The café serves crème brûlée and a naïve little rosé.",
        "Zoë and Chloé met in São Paulo and Kraków.",
        "경복궁은 서울의 대표 궁궐입니다. «Résumé» and “quotes” — fine…",
    ],
)
def test_real_accents_are_not_broken(rules, answer):
    assert rules.check_response(answer) is None


SHARED_SEEDS = ROOT.parent / "shared" / "data" / "en_seed_tasks.jsonl"


@pytest.mark.skipif(not SHARED_SEEDS.exists(), reason="the workspace's shared seed data is not here (DESIGN §5)")
def test_good_answers_written_by_others_pass(rules):
    """The Self-Instruct seed outputs are good answers written elsewhere: almost none may be flagged."""
    flagged = []
    for line in SHARED_SEEDS.read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        instruction = task["instruction"] + (f"\n\n### Input\n{task['input']}" if task.get("input") else "")
        failure = rules.check_response(task["output"], instruction)
        if failure:
            flagged.append((failure.reason, task["output"][:60]))
    assert len(flagged) <= 2, flagged


def test_planted_script_drift_never_reaches_the_records(tmp_path):
    """Han, kana or U+FFFD planted in some Korean answers: each is a failure with its reason, no record."""
    from conftest import make_settings, run_workflow
    from fakes import ScriptedChatModel, default_responder, task_of

    planted = {"03": "경복궁은 조선의 正宮입니다. 규모가 가장 큰 궁궐로 알려져 있습니다.",
               "07": "이 음식은 とても 맛있습니다. 발효 과정이 핵심입니다.",
               "11": "발효 음식은 \ufffd\ufffd 건강에 좋습니다. 유산균이 많기 때문입니다."}

    def world(prompt, seed):
        if task_of(prompt) == "respond":
            for marker, answer in planted.items():
                if f"과제 {marker}" in prompt:
                    return answer
        return default_responder(prompt, seed)

    rows = [f"과제 {i:02d}: 한국 전통 음식 하나를 골라 그 역사와 만드는 법을 설명하세요." for i in range(20)]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"k{i:02d}", "instruction": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(rows)), encoding="utf-8")
    settings = make_settings(tmp_path, data_path=str(path), max_steps=0, loop=1, diversity=["none"])
    run_workflow(settings, ScriptedChatModel(responder=world))
    out = tmp_path / "out"
    records = (out / "records.jsonl").read_text(encoding="utf-8")
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "正宮" not in records and "とても" not in records and "\ufffd" not in records
    reasons = {f["root_id"]: f["reason"] for f in failures}
    assert reasons == {"k03": "mixed_script", "k07": "mixed_script", "k11": "broken_text"}
    assert len(records.splitlines()) == 17
