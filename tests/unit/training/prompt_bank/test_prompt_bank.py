"""Tests for the bundled prompt bank: generation, determinism, the committed file, balance, templates."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from training.prompt_bank.__main__ import main, write_bank
from training.prompt_bank.filters import exact_dedup, near_dedup, normalize
from training.prompt_bank.generate import (
    Bank,
    BankConfig,
    build_bank,
    cap_per_category,
    prompt_id,
    render,
    template_prompts,
)
from training.prompt_bank.manifest import counts_add_up, manifest_path, sha256_file
from training.prompt_bank.templates import CATEGORIES, SLOTS, TEMPLATES, Template, vocab_name

ROOT = Path(__file__).resolve().parents[4]
COMMITTED = ROOT / "assets" / "prompts" / "prompts.jsonl"


@pytest.fixture(scope="module")
def bank() -> Bank:
    return build_bank(BankConfig())


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_bank_size_and_balance(bank: Bank) -> None:
    prompts = [record["prompt"] for record in bank.records]
    assert len(exact_dedup(prompts)) == len(prompts) >= 2000
    counts = Counter(record["category"] for record in bank.records)
    assert len(counts) >= 12
    assert max(counts.values()) <= 0.15 * len(prompts)
    assert set(counts) == set(CATEGORIES)


def test_bank_passes_its_own_near_dup_filter(bank: Bank) -> None:
    assert len(near_dedup(bank.records, key=lambda r: r["prompt"])) == len(bank.records)


def test_every_template_contributes(bank: Bank) -> None:
    sources = Counter(record["source"] for record in bank.records)
    assert set(sources) == {f"template:{t.name}" for t in TEMPLATES}
    assert len(TEMPLATES) >= 100
    assert sum(len(values) for values in SLOTS.values()) >= 500
    per_category = Counter(t.category for t in TEMPLATES)
    assert min(per_category.values()) >= 4  # many templates per category, not one with swapped numbers


def test_record_shape_and_ids(bank: Bank) -> None:
    ids = [record["id"] for record in bank.records]
    assert len(set(ids)) == len(ids)
    for record in bank.records:
        assert set(record) == {"id", "prompt", "category", "source"}
        assert record["id"] == prompt_id(record["prompt"])
        assert record["source"].startswith(f"template:{record['category']}.")
        assert not re.search(r"\{[a-z_0-9]+\}", record["prompt"])  # no unfilled placeholder
        assert record["prompt"] == record["prompt"].strip() and record["prompt"][0].isupper()


def test_same_seed_same_bank_other_seed_other_bank(bank: Bank) -> None:
    small = BankConfig(per_category=20)
    first, second = build_bank(small), build_bank(small)
    assert first.records == second.records
    other = build_bank(BankConfig(per_category=20, seed=1))
    assert {r["id"] for r in other.records} != {r["id"] for r in first.records}


def test_committed_bank_regenerates(bank: Bank) -> None:
    committed = _read(COMMITTED)
    assert [(r["id"], r["prompt"]) for r in committed] == [(r["id"], r["prompt"]) for r in bank.records]
    assert committed == bank.records
    manifest = json.loads(manifest_path(COMMITTED).read_text(encoding="utf-8"))
    assert manifest["sha256"] == sha256_file(COMMITTED)
    assert manifest["final_count"] == len(committed)
    assert counts_add_up(manifest)
    assert manifest["filters"] == [stage.as_dict() for stage in bank.stages]


def test_committed_bank_and_manifest_regenerate_byte_for_byte(bank: Bank, tmp_path: Path) -> None:
    out = tmp_path / "prompts.jsonl"
    write_bank(bank, out, BankConfig())
    assert out.read_bytes() == COMMITTED.read_bytes()
    assert manifest_path(out).read_bytes() == manifest_path(COMMITTED).read_bytes()


def test_cli_writes_bank_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "bank.jsonl"
    assert main(["--out", str(out), "--per-category", "10"]) == 0
    records = _read(out)
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert len(records) == manifest["final_count"] == sum(manifest["category_counts"].values())
    assert manifest["sha256"] == sha256_file(out)
    assert manifest["generator"]["seed"] == 0 and manifest["generator"]["version"]
    assert [f["name"] for f in manifest["filters"]] == ["exact_dup", "length", "near_dup", "category_cap"]
    assert counts_add_up(manifest)


def test_render_distinct_values_for_numbered_slots() -> None:
    template = Template("trivia.test", "Which is faster, the {animal} or the {animal_2}?")
    rng = random.Random(0)
    for _ in range(200):
        prompt = render(template, rng)
        first, second = prompt.removeprefix("Which is faster, the ").removesuffix("?").split(" or the ")
        assert first != second


def test_render_unknown_slot_raises() -> None:
    with pytest.raises(KeyError, match="nonexistent"):
        render(Template("x.y", "Tell me about {nonexistent}."), random.Random(0))


def test_vocab_name() -> None:
    assert vocab_name("animal_2") == "animal"
    assert vocab_name("animal") == "animal"
    assert vocab_name("list_topic") == "list_topic"


def test_template_prompts_stops_at_small_slot_space() -> None:
    template = Template("x.y", "Name a country in {continent}.")
    prompts = template_prompts(template, seed=0, count=50)
    assert len(prompts) == len(SLOTS["continent"])  # every value once, no endless loop


def test_cap_per_category_keeps_first_in_order() -> None:
    records = [{"id": str(i), "prompt": str(i), "category": "ab"[i % 2], "source": "t"} for i in range(10)]
    kept = cap_per_category(records, 2)
    assert [r["id"] for r in kept] == ["0", "1", "2", "3"]


def test_math_word_problems_have_consistent_numbers(bank: Bank) -> None:
    for record in bank.records:
        if record["source"] == "template:math_word.subtract.1":
            words = record["prompt"].split()
            had, gave = int(words[2]), int(words[words.index("gave") + 1])
            assert 0 < gave < had


def test_normalized_texts_unique_in_committed_file() -> None:
    texts = [normalize(r["prompt"]) for r in _read(COMMITTED)]
    assert len(set(texts)) == len(texts)
