"""The diversity hook: near-duplicate removal, in-breadth mutation, the equality judge, user steps."""

from __future__ import annotations

import json

from conftest import fake_llm_config, make_settings, run_workflow
from record_store.near_duplicates import NearDuplicateIndex
from fakes import ScriptedChatModel, default_responder, task_of


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_near_duplicates_are_found_in_korean_and_english_but_not_in_the_same_lineage():
    index = NearDuplicateIndex(threshold=0.7)
    index.add("k1", "k1", "김치찌개를 맛있게 끓이는 방법을 단계별로 알려 주세요.")
    index.add("e1", "e1", "Explain how a rainbow forms, in simple terms for a child.")
    assert index.find("김치찌개를 맛있게 끓이는 방법을 단계별로 알려주세요!", exclude_root="k2") == "k1"
    assert index.find("Explain how a rainbow forms in simple terms for a child", exclude_root="e2") == "e1"
    assert index.find("Explain how a rainbow forms in simple terms for a child", exclude_root="e1") is None
    assert index.find("부산에서 가 볼 만한 바닷가 카페를 추천해 주세요.", exclude_root="k3") is None
    assert index.find("Write a haiku about autumn leaves.", exclude_root="e3") is None


def test_the_disk_index_finds_what_datasketchs_own_lsh_finds():
    """Same signatures, same bands: the SQLite buckets must give datasketch's answers."""
    import random

    from datasketch import MinHash, MinHashLSH

    from failure_checks.rules import char_shingles
    from record_store.near_duplicates import NUM_PERM

    rng = random.Random(7)
    words = "물 불 바람 river stone cloud 나무 light 하늘 garden 바다 song".split()
    texts = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(150)]
    texts += [t.replace(t.split()[0], "echo", 1) for t in texts[:40]]  # planted near-duplicates
    ours, theirs, signatures = NearDuplicateIndex(threshold=0.6), MinHashLSH(threshold=0.6, num_perm=NUM_PERM), {}
    for i, text in enumerate(texts):
        signature = MinHash(num_perm=NUM_PERM)
        signature.update_batch([shingle.encode() for shingle in char_shingles(text)])
        expected = max(((signature.jaccard(signatures[c]), c) for c in theirs.query(signature)
                        if signature.jaccard(signatures[c]) >= 0.6), default=(0, None))[1]
        assert ours.find(text, exclude_root=f"r{i}") == expected, text
        ours.add(f"t{i}", f"r{i}", text)
        theirs.insert(f"t{i}", signature)
        signatures[f"t{i}"] = signature
    assert sum(ours.find(t, exclude_root="none") is not None for t in texts[150:]) >= 30


def _data(tmp_path, instructions, start=0):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "instruction": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(instructions, start=start)), encoding="utf-8")
    return str(path)


NEAR_DUPLICATES = ["Explain how a rainbow forms, in simple terms for a child.",
                   "Explain how a rainbow forms in simple terms for a child!",
                   "김치찌개를 맛있게 끓이는 방법을 단계별로 알려 주세요.",
                   "김치찌개를 맛있게 끓이는 방법을 단계별로 알려주세요.",
                   "Write a haiku about autumn leaves.", "부산에서 가 볼 만한 바닷가 카페를 추천해 주세요."]


def test_dedup_removes_near_duplicate_seeds_at_load_and_accounting_holds(tmp_path):
    settings = make_settings(tmp_path, data_path=_data(tmp_path, NEAR_DUPLICATES), max_steps=0, loop=2,
                             diversity=["dedup"], dedup_threshold=0.7)
    run_workflow(settings, ScriptedChatModel())
    out = tmp_path / "out"
    duplicates = [f for f in _read(out / "failures.jsonl") if f["reason"] == "near_duplicate"]
    # d0 came first and stays a seed; d1, nearly the same text, is refused at load (level 0), in both languages.
    assert {(f["root_id"], f["level"], f["stage"], f["detail"]) for f in duplicates} == {
        ("d1", 0, "input", "duplicates d0"), ("d3", 0, "input", "duplicates d2")}
    assert {s["id"] for s in _read(out / "seeds.jsonl")} == {"d0", "d2", "d4", "d5"}
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["levels"]["0"]["failures"] == 2
    assert run["counts"]["accounting_holds"]


def test_dedup_removes_an_evolution_that_nearly_repeats_another_lineage(tmp_path):
    def responder(prompt, seed):
        if task_of(prompt) == "evolve":  # two different seeds evolve into nearly the same text
            return "#Finally Rewritten Instruction#\nExplain, step by step, how a rainbow forms after summer rain."
        return default_responder(prompt, seed)

    data = _data(tmp_path, ["Write a haiku about autumn leaves.", "Name three rivers in Africa and their lengths."])
    # One request at a time, so evolutions arrive in input order and the first of the pair stays.
    settings = make_settings(tmp_path, data_path=data, max_steps=0, loop=1, diversity=["dedup"], dedup_threshold=0.7,
                             evol_llm=fake_llm_config("evol", concurrency=1))
    run_workflow(settings, ScriptedChatModel(responder=responder))
    out = tmp_path / "out"
    duplicates = [f for f in _read(out / "failures.jsonl") if f["reason"] == "near_duplicate"]
    assert [(f["root_id"], f["level"], f["detail"]) for f in duplicates] == [("d1", 1, "duplicates d0.L1")]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["accounting_holds"]
    assert run["quality"]["1"]["failure_rates"]["near_duplicate"] == round(1 / 2, 4)


def test_no_dedup_keeps_them(tmp_path):
    settings = make_settings(tmp_path, data_path=_data(tmp_path, NEAR_DUPLICATES), max_steps=0, loop=1,
                             diversity=["none"])
    run_workflow(settings, ScriptedChatModel())
    assert len(_read(tmp_path / "out" / "records.jsonl")) == 6


def test_breadth_creates_new_lineages_that_evolve_at_the_next_level(tmp_path):
    settings = make_settings(tmp_path, data_path=_data(tmp_path, NEAR_DUPLICATES[4:], start=4), max_steps=0, loop=2,
                             diversity=["breadth"], breadth_ratio=1.0)
    model = ScriptedChatModel()
    run_workflow(settings, model)
    records = _read(tmp_path / "out" / "records.jsonl")
    created = [r for r in records if r.get("lineage") == "breadth" and r["level"] == 1]
    assert {r["parent_id"] for r in created} == {"d4.L1", "d5.L1"}
    assert all(r["root_id"] == r["id"] for r in created)
    korean = next(r for r in created if r["parent_id"] == "d5.L1")
    assert "발효" in korean["instruction"]  # the language of its inspiration
    children = [r for r in records if r["level"] == 2 and r["root_id"] in {c["id"] for c in created}]
    assert len(children) == 2 and all(c["instruction"].startswith(p["instruction"]) for c, p in
                                      zip(sorted(children, key=lambda r: r["root_id"]), sorted(created, key=lambda r: r["id"])))
    run = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["levels"]["1"]["added"] == 2 and run["counts"]["accounting_holds"]
    assert "breadth" in model.tasks()


def test_equality_judge_eliminates_evolutions_that_add_nothing(tmp_path):
    def responder(prompt, seed):
        if task_of(prompt) == "equality":
            return "No." if "haiku" in prompt else "Yes, it adds a constraint."
        return default_responder(prompt, seed)

    settings = make_settings(tmp_path, data_path=_data(tmp_path, NEAR_DUPLICATES[4:], start=4), max_steps=0, loop=1,
                             equality_check=True)
    run_workflow(settings, ScriptedChatModel(responder=responder))
    failures = _read(tmp_path / "out" / "failures.jsonl")
    assert [(f["root_id"], f["reason"]) for f in failures] == [("d4", "no_information_gain")]


def test_a_user_step_from_a_file_runs_and_its_eliminations_are_recorded(tmp_path):
    plugin = tmp_path / "my_filter.py"
    plugin.write_text(
        "from nodes.diversity import eliminate_item\n\n"
        "SEEN = []\n\n"
        "async def drop_haiku(chunk, context):\n"
        "    for item in chunk:\n"
        "        SEEN.append((context.level, item['id']))\n"
        "        if 'haiku' in item['instruction']:\n"
        "            eliminate_item(item, 'no_poetry', 'this set is prose only')\n"
        "    return chunk\n")
    settings = make_settings(tmp_path, data_path=_data(tmp_path, NEAR_DUPLICATES[4:], start=4), max_steps=0, loop=1,
                             diversity=["dedup", f"{plugin}:drop_haiku"])
    run_workflow(settings, ScriptedChatModel())
    failures = _read(tmp_path / "out" / "failures.jsonl")
    assert [(f["root_id"], f["reason"], f["detail"]) for f in failures] == [("d4", "no_poetry", "this set is prose only")]
    assert [r["root_id"] for r in _read(tmp_path / "out" / "records.jsonl")] == ["d5"]
