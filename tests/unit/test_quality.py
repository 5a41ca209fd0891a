"""run_report metrics and metrics_cli: each metric on tiny hand-computed inputs, level grouping, the table, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shared_data
from failure_checks.rules import char_shingles
from run_report.metrics import Reservoir, format_table, jaccard_distance, level_metrics, sample_for_pairs, text_metrics

EXPECTED_KEYS = {
    "count", "mean_length", "median_length", "growth_over_parent", "distinct_1_chars", "distinct_2_chars",
    "distinct_1_words", "distinct_2_words", "pairwise_jaccard_distance", "hangul_ratio", "hangul_ratio_drift",
}


# --- text_metrics --------------------------------------------------------------


def test_two_identical_texts():
    metrics = text_metrics(["ab", "ab"])
    assert set(metrics) == EXPECTED_KEYS
    assert metrics["count"] == 2
    assert metrics["mean_length"] == 2.0 and metrics["median_length"] == 2.0
    assert metrics["distinct_1_chars"] == 0.5  # {a, b} / [a, b, a, b] = 2/4
    assert metrics["distinct_2_chars"] == 0.5  # {ab} / [ab, ab] = 1/2
    assert metrics["distinct_1_words"] == 0.5  # {ab} / [ab, ab] = 1/2
    assert metrics["distinct_2_words"] == 0.0  # one word per text: no word bigrams at all
    assert metrics["pairwise_jaccard_distance"] == 0.0
    assert metrics["growth_over_parent"] is None and metrics["hangul_ratio_drift"] is None


def test_median_length_of_odd_and_even_counts():
    assert text_metrics(["a", "abc", "abcdefgh"])["median_length"] == 3.0
    assert text_metrics(["a", "abc"])["median_length"] == 2.0  # (1 + 3) / 2
    assert text_metrics(["a", "abc"])["mean_length"] == 2.0


def test_no_texts():
    metrics = text_metrics([])
    assert metrics["count"] == 0
    assert metrics["mean_length"] == 0.0 and metrics["median_length"] == 0.0
    assert metrics["distinct_1_chars"] == 0.0 and metrics["distinct_2_words"] == 0.0
    assert metrics["pairwise_jaccard_distance"] is None


def test_whitespace_runs_become_one_kept_space():
    # "a  b" and "a\tb" both become "a b": chars [a, ' ', b] twice -> 3 distinct / 6;
    # bigrams ["a ", " b"] twice -> 2 distinct / 4.
    metrics = text_metrics(["a  b", "a\tb"])
    assert metrics["distinct_1_chars"] == 0.5
    assert metrics["distinct_2_chars"] == 0.5


def test_char_bigrams_do_not_span_texts():
    # "ab", "cd": bigrams [ab, cd] = 2/2; a span across texts would add "bc".
    assert text_metrics(["ab", "cd"])["distinct_2_chars"] == 1.0


def test_distinct_words_are_lowercased():
    # words [the, cat, the, cat, sat]: 3 distinct / 5;
    # bigrams [(the, cat), (the, cat), (cat, sat)]: 2 distinct / 3.
    metrics = text_metrics(["The cat", "the CAT sat"])
    assert metrics["distinct_1_words"] == pytest.approx(3 / 5)
    assert metrics["distinct_2_words"] == pytest.approx(2 / 3)


def test_korean_char_ngrams():
    # "안녕 안녕": chars [안, 녕, ' ', 안, 녕] -> 3 distinct / 5;
    # bigrams [안녕, 녕_, _안, 안녕] -> 3 distinct / 4.
    metrics = text_metrics(["안녕 안녕"])
    assert metrics["distinct_1_chars"] == pytest.approx(3 / 5)
    assert metrics["distinct_2_chars"] == pytest.approx(3 / 4)
    assert metrics["distinct_1_words"] == 0.5  # [안녕, 안녕]
    assert metrics["hangul_ratio"] == 1.0


def test_hangul_ratio_is_the_mean_per_text():
    # 1.0 for the Korean text, 0.0 for the English one.
    assert text_metrics(["사과", "apple"])["hangul_ratio"] == 0.5


# --- pairwise distance ---------------------------------------------------------


def test_disjoint_trigrams_are_distance_one():
    assert text_metrics(["abc", "xyz"])["pairwise_jaccard_distance"] == 1.0


def test_partial_trigram_overlap():
    # {abc, bcd} vs {bcd, cde}: 1 shared of 3 -> 1 - 1/3.
    assert text_metrics(["abcd", "bcde"])["pairwise_jaccard_distance"] == pytest.approx(2 / 3)


def test_distance_ignores_case_and_spacing():
    assert text_metrics(["ABC  d", "abc d"])["pairwise_jaccard_distance"] == 0.0


def test_distance_is_the_mean_over_all_pairs():
    # pairs (abc, abc) = 0, (abc, xyz) = 1 twice -> 2/3.
    assert text_metrics(["abc", "abc", "xyz"])["pairwise_jaccard_distance"] == pytest.approx(2 / 3)


def test_shingles_ignore_case_and_spacing():
    assert char_shingles("Ab \t c\nD ") == {"ab ", "b c", " c ", "c d"}
    assert char_shingles("김치 찌개") == {"김치 ", "치 찌", " 찌개"}


def test_short_texts_still_compare():
    assert char_shingles("ab") == {"ab"}
    assert char_shingles("") == {""} and jaccard_distance(char_shingles(""), char_shingles("abc")) == 1.0
    assert jaccard_distance(char_shingles("ab"), char_shingles("cd")) == 1.0
    assert jaccard_distance(set(), set()) == 0.0


def test_sample_of_two_gives_one_pair_reproducibly():
    texts = ["aaa"] * 5 + ["bbb"] * 5  # all 45 pairs would average 25/45
    sample = sample_for_pairs(texts, 2, seed=3)
    assert len(sample) == 2  # one pair
    distance = text_metrics(texts, sample_size=2, seed=3)["pairwise_jaccard_distance"]
    assert distance == jaccard_distance(char_shingles(sample[0]), char_shingles(sample[1]))
    assert distance in (0.0, 1.0)  # a single pair, never the 45-pair mean
    assert text_metrics(texts, sample_size=2, seed=3)["pairwise_jaccard_distance"] == distance
    assert sample_for_pairs(texts, 2, seed=3) == sample
    assert text_metrics(texts)["pairwise_jaccard_distance"] == pytest.approx(25 / 45)


def test_sample_keeps_everything_when_small_enough():
    assert sample_for_pairs(["a", "b", "c"], 200, seed=0) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        sample_for_pairs(["a", "b"], 1, seed=0)


# --- parents -------------------------------------------------------------------


def test_growth_over_parent():
    # 4/2 and 6/3 -> mean 2.0
    assert text_metrics(["abcd", "abcdef"], ["ab", "abc"])["growth_over_parent"] == 2.0
    # 6/2 and 2/4 -> mean 1.75
    assert text_metrics(["abcdef", "ab"], ["ab", "abcd"])["growth_over_parent"] == 1.75


def test_missing_or_empty_parents_are_left_out_of_parent_means():
    metrics = text_metrics(["abcd", "xyz", "uvw"], ["ab", "", None])
    assert metrics["growth_over_parent"] == 2.0
    assert metrics["count"] == 3
    assert text_metrics(["abc"], [""])["growth_over_parent"] is None


def test_parents_must_match_texts():
    with pytest.raises(ValueError):
        text_metrics(["a", "b"], ["a"])


def test_drift_near_zero_when_korean_is_kept():
    texts = ["사과를 세 개 사고, 가격을 계산해 주세요.", "서울의 인구 변화를 연도별로 설명하세요."]
    parents = ["사과를 사 주세요.", "서울의 인구는?"]
    assert text_metrics(texts, parents)["hangul_ratio_drift"] == pytest.approx(0.0)


def test_drift_strongly_negative_when_korean_becomes_english():
    # every parent is all Hangul (1.0), every text has none (0.0)
    metrics = text_metrics(["Buy three apples.", "Explain Seoul's population."], ["사과를 사 주세요.", "서울의 인구는?"])
    assert metrics["hangul_ratio_drift"] == -1.0


def test_drift_of_a_partial_switch():
    # "사과 apple": letters 사,과,a,p,p,l,e -> 2/7 Hangul; parent "사과" -> 1.0
    assert text_metrics(["사과 apple"], ["사과"])["hangul_ratio_drift"] == pytest.approx(2 / 7 - 1)


# --- level_metrics -------------------------------------------------------------


SEEDS = [{"id": "s1", "instruction": "ab"}, {"id": "s2", "instruction": "abcd"}]
RECORDS = [
    {"id": "s1.L1", "parent_id": "s1", "level": 1, "instruction": "abcd"},  # 4/2
    {"id": "s2.L1", "parent_id": "s2", "level": 1, "instruction": "abcdabcd"},  # 8/4
    {"id": "s1.L2", "parent_id": "s1.L1", "level": 2, "instruction": "abcdabcdabcd"},  # 12/4, parent at level 1
    {"id": "x.L2", "parent_id": "gone", "level": 2, "instruction": "zz"},  # no parent: counted, not compared
]


def test_level_metrics_groups_levels_and_finds_parents_across_levels():
    result = level_metrics(RECORDS, SEEDS)
    assert list(result) == ["seed", "1", "2"]
    assert result["seed"]["count"] == 2 and result["seed"]["growth_over_parent"] is None
    assert result["1"]["count"] == 2 and result["1"]["growth_over_parent"] == 2.0
    assert result["2"]["count"] == 2 and result["2"]["growth_over_parent"] == 3.0
    assert result["2"]["mean_length"] == 7.0  # (12 + 2) / 2
    assert result["1"]["hangul_ratio_drift"] == 0.0


def test_level_metrics_orders_levels_numerically_and_skips_non_text():
    records = [{"id": f"r{level}", "parent_id": "s1", "level": level, "instruction": "abcd"} for level in (10, 2, 1)]
    records.append({"id": "empty", "parent_id": "s1", "level": 1, "instruction": "  "})
    result = level_metrics(records, SEEDS)
    assert list(result) == ["seed", "1", "2", "10"]
    assert result["1"]["count"] == 1


def test_level_metrics_drift_korean_seed_to_english_record():
    seeds = [{"id": "k", "instruction": "사과를 사 주세요."}]
    records = [{"id": "k.L1", "parent_id": "k", "level": 1, "instruction": "Buy apples."}]
    assert level_metrics(records, seeds)["1"]["hangul_ratio_drift"] == -1.0


def test_level_metrics_streams_from_functions_like_from_lists():
    calls = []

    def read(rows):
        def reader():
            calls.append(1)
            return (dict(row) for row in rows)  # a fresh one-shot generator per call
        return reader

    assert level_metrics(read(RECORDS), read(SEEDS)) == level_metrics(RECORDS, SEEDS)
    assert len(calls) == 3  # records twice (levels, then parents), seeds once
    assert level_metrics(iter(RECORDS), iter(SEEDS)) == level_metrics(RECORDS, SEEDS)


def test_level_metrics_same_for_interleaved_levels():
    shuffled = [RECORDS[2], RECORDS[0], RECORDS[3], RECORDS[1]]  # level 2, 1, 2, 1
    assert level_metrics(shuffled, SEEDS) == level_metrics(RECORDS, SEEDS)


def test_a_parent_later_in_the_same_level_is_found():
    # A breadth item's parent is a record of its own level, possibly written after it.
    records = [{"id": "s1.L1.B", "parent_id": "s1.L1", "level": 1, "instruction": "abcdefgh"},  # 8/4
               {"id": "s1.L1", "parent_id": "s1", "level": 1, "instruction": "abcd"}]  # 4/2
    assert level_metrics(records, SEEDS)["1"]["growth_over_parent"] == 2.0


def test_the_last_row_of_an_id_is_the_parent():
    seeds = [{"id": "p", "instruction": "ab"}]
    records = [{"id": "c", "parent_id": "p", "level": 2, "instruction": "abcdefgh"},
               {"id": "p", "parent_id": None, "level": 1, "instruction": "abcd"}]  # overrides the seed "p"
    assert level_metrics(records, seeds)["2"]["growth_over_parent"] == 2.0


def test_reservoir_sample_is_reproducible_and_uniform():
    items = [str(i) for i in range(10)]
    assert sample_for_pairs(items, 3, seed=5) == sample_for_pairs(iter(items), 3, seed=5)
    assert len(set(sample_for_pairs(items, 3, seed=5))) == 3
    counts = dict.fromkeys(items, 0)
    for seed in range(3000):
        for item in sample_for_pairs(items, 3, seed=seed):
            counts[item] += 1
    assert all(750 < n < 1050 for n in counts.values()), counts  # 900 expected for each
    reservoir = Reservoir(4, seed=0)
    for item in items[:4]:
        reservoir.add(item)
    assert reservoir.items == items[:4]  # a stream no longer than the sample is kept whole, in order


# --- format_table --------------------------------------------------------------


def test_format_table_is_aligned_with_three_decimals_and_dashes():
    table = format_table({"seed": text_metrics(["ab", "ab"]), "level-one": text_metrics(["abcd"], ["ab"])})
    lines = table.splitlines()
    assert lines[0].split() == ["name", "count", "mean_len", "median_len", "growth", "dist1_chr", "dist2_chr",
                                "dist1_word", "dist2_word", "pair_dist", "hangul", "drift"]
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    seed_cells = lines[1].split()
    assert seed_cells[:5] == ["seed", "2", "2.000", "2.000", "-"]
    assert lines[2].split()[4] == "2.000"  # growth of "abcd" over "ab"
    assert lines[2].split()[9] == "-"  # a single text has no pairs


# --- command line --------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "run_report.metrics_cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", [
        {"id": "a", "instruction": "사과를 사 주세요."}, {"id": "b", "instruction": "Explain gravity."},
        {"id": "c", "instruction": ""},
    ])


def test_cli_prints_a_table_with_one_row_per_file(small_file: Path):
    result = run_cli(str(small_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "count", "mean_len"]
    assert lines[1].split()[:2] == [str(small_file), "2"]
    assert f"{small_file}: 1 rows skipped (empty or not text)" in result.stdout


def test_cli_json_parses(small_file: Path):
    result = run_cli(str(small_file), "--json", "--sample-size", "5", "--seed", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)[str(small_file)]
    assert set(metrics) == EXPECTED_KEYS
    assert metrics["count"] == 2 and metrics["hangul_ratio"] == 0.5


def test_cli_missing_field_is_one_error_line(small_file: Path):
    result = run_cli(str(small_file), "--field", "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --field 'nope' is not a column of {small_file}; columns: id, instruction"]


def test_cli_missing_file_is_one_error_line(tmp_path: Path):
    result = run_cli(str(tmp_path / "absent.jsonl"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_cli_by_level_uses_seeds_next_to_records(tmp_path: Path):
    run_dir = tmp_path / "out"
    run_dir.mkdir()
    write_jsonl(run_dir / "seeds.jsonl", [{**row, "root_id": row["id"], "parent_id": None, "level": 0}
                                          for row in SEEDS])
    records = write_jsonl(run_dir / "records.jsonl", RECORDS)
    result = run_cli(str(records), "--by-level")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert names == ["seed", "1", "2"]
    by_level = json.loads(run_cli(str(records), "--by-level", "--json").stdout)[str(records)]
    assert by_level["2"]["growth_over_parent"] == 3.0  # parent found at level 1 of the same file


def test_cli_on_the_shared_seed_files():
    ko, en = str(shared_data("ko_seed.jsonl")), str(shared_data("en_seed_tasks.jsonl"))
    result = run_cli(ko, en)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("name") and "pair_dist" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows[ko][1] == "200" and rows[en][1] == "175"
    assert float(rows[ko][10]) > 0.9 and rows[en][10] == "0.000"  # hangul column
