"""Tests for prompts + responses -> chat records, hash splits, the dataset pipeline and its manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.data.schema import Example
from training.prompt_bank.dataset import DatasetConfig, build_dataset, main, read_responses, write_dataset
from training.prompt_bank.generate import BankConfig, PromptRecord, build_bank, prompt_id
from training.prompt_bank.manifest import counts_add_up, manifest_path, sha256_file
from training.prompt_bank.records import build_records, split_of, split_records


def _prompt(text: str, category: str = "test") -> PromptRecord:
    return PromptRecord(id=prompt_id(text), prompt=text, category=category, source="template:test.1")


# Test data only: hand-written stand-ins for teacher responses (the real ones come from the teacher).
def _fake_response(prompt: PromptRecord) -> str:
    return f"A short answer about: {prompt['prompt'][:40]}"


def test_build_records_shape_and_skips() -> None:
    prompts = [_prompt("What is rain?"), _prompt("Define soil.", "definition"), _prompt("Name a bird.")]
    responses = {prompts[0]["id"]: "  Water falling from clouds.\n", prompts[1]["id"]: "   "}
    records = build_records(prompts, responses)
    assert records == [{"id": prompts[0]["id"], "category": "test", "messages": [
        {"role": "user", "content": "What is rain?"},
        {"role": "assistant", "content": "Water falling from clouds."}]}]
    Example.model_validate(records[0])  # readable by the training data reader


def test_build_records_rejects_mismatched_inputs() -> None:
    prompts = [_prompt("What is rain?")]
    with pytest.raises(ValueError, match="no prompt"):
        build_records(prompts, {"pb-unknown": "text"})
    with pytest.raises(ValueError, match="duplicate"):
        build_records(prompts * 2, {})


def test_split_is_deterministic_disjoint_and_near_fractions() -> None:
    bank = build_bank(BankConfig(per_category=40)).records
    records = build_records(bank, {p["id"]: _fake_response(p) for p in bank})
    first = split_records(records, 0.1, 0.1)
    again = split_records(list(reversed(records)), 0.1, 0.1)
    ids = {name: {r["id"] for r in part} for name, part in first.items()}
    assert ids == {name: {r["id"] for r in part} for name, part in again.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(part) for part in ids.values()) == len(records)
    for name in ("val", "test"):
        assert 0.05 < len(ids[name]) / len(records) < 0.15
    other_salt = split_records(records, 0.1, 0.1, salt="other")
    assert {r["id"] for r in other_salt["val"]} != ids["val"]


def test_split_of_edges() -> None:
    assert split_of("x", 0.0, 0.0) == "train"
    assert {split_of(f"id{i}", 0.3, 0.3) for i in range(200)} == {"train", "val", "test"}
    with pytest.raises(ValueError):
        split_of("x", 0.6, 0.5)


def test_pipeline_dedups_before_split_and_counts_add_up() -> None:
    base = "Can you give me three simple tips for sleeping better at night?"
    prompts = [
        _prompt(base),
        _prompt(base.upper()),  # exact duplicate after normalization
        _prompt("Could you give me three simple tips for sleeping better at night?"),  # near duplicate
        _prompt("Hi"),  # too short
        _prompt("Explain how a rainbow forms."),
        _prompt("Write a haiku about autumn leaves."),
        _prompt("Define osmosis in one sentence."),
        _prompt("Convert 5 miles to kilometers."),
    ]
    responses = {p["id"]: _fake_response(p) for p in prompts}
    responses[prompts[5]["id"]] = "Leaves fall. " * 30  # degenerate: repetition
    responses[prompts[6]["id"]] = "x" * 5000  # too long (and repetitive; length runs first)
    del responses[prompts[7]["id"]]
    dataset = build_dataset(prompts, responses, DatasetConfig(val_frac=0.0, test_frac=0.0))
    assert [(s.name, s.count_in, s.count_out) for s in dataset.stages] == [
        ("exact_dup", 8, 7), ("prompt_length", 7, 6), ("near_dup", 6, 5), ("missing_response", 5, 4),
        ("response_length", 4, 3), ("repetition", 3, 2)]
    assert [r["id"] for r in dataset.splits["train"]] == [prompts[0]["id"], prompts[4]["id"]]


def test_near_duplicates_never_cross_splits() -> None:
    """Many one-word variants of one prompt: after the pipeline only one survives, in exactly one split."""
    variants = [f"Can you give me three simple tips for sleeping better at night, {w}?"
                for w in ("please", "friend", "thanks", "kindly", "today", "now", "quickly", "honestly")]
    prompts = [_prompt(v) for v in variants] + [_prompt(f"Define word number {i} for me.") for i in range(30)]
    dataset = build_dataset(prompts, {p["id"]: _fake_response(p) for p in prompts},
                            DatasetConfig(val_frac=0.3, test_frac=0.3))
    survivors = [r for part in dataset.splits.values() for r in part if "sleeping" in r["messages"][0]["content"]]
    assert len(survivors) == 1


def test_write_dataset_and_manifests(tmp_path: Path) -> None:
    bank = build_bank(BankConfig(per_category=15)).records
    config = DatasetConfig(val_frac=0.2, test_frac=0.2)
    dataset = build_dataset(bank, {p["id"]: _fake_response(p) for p in bank}, config)
    manifests = write_dataset(dataset, tmp_path, sources=[{"kind": "test"}], config=config)
    total = 0
    for name, manifest in manifests.items():
        path = tmp_path / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == manifest["final_count"] == len(dataset.splits[name])
        assert manifest["sha256"] == sha256_file(path)
        assert json.loads(manifest_path(path).read_text(encoding="utf-8")) == manifest
        assert counts_add_up(manifest)
        assert manifest["filters"][-1]["name"] == f"split:{name}"
        assert manifest["config"]["val_frac"] == 0.2 and manifest["sources"] == [{"kind": "test"}]
        total += len(lines)
    assert total == dataset.total > 0


def test_counts_add_up_detects_broken_chain() -> None:
    good = {"final_count": 3, "filters": [{"name": "a", "in": 5, "out": 4, "removed": 1},
                                          {"name": "b", "in": 4, "out": 3, "removed": 1}]}
    assert counts_add_up(good)
    assert not counts_add_up({**good, "final_count": 2})
    assert not counts_add_up({**good, "filters": [good["filters"][0], {"name": "b", "in": 5, "out": 3, "removed": 2}]})
    assert not counts_add_up({**good, "filters": [{"name": "a", "in": 5, "out": 3, "removed": 1}]})


def test_cli_end_to_end(tmp_path: Path) -> None:
    from training.prompt_bank.__main__ import main as bank_main

    prompts_path = tmp_path / "prompts.jsonl"
    assert bank_main(["--out", str(prompts_path), "--per-category", "5"]) == 0
    prompts = [json.loads(line) for line in prompts_path.read_text(encoding="utf-8").splitlines()]
    responses_path = tmp_path / "responses.jsonl"
    responses_path.write_text("".join(json.dumps({"id": p["id"], "response": _fake_response(p)}) + "\n"
                                      for p in prompts), encoding="utf-8")
    out = tmp_path / "chat"
    assert main(["--prompts", str(prompts_path), "--responses", str(responses_path), "--out", str(out)]) == 0
    manifest = json.loads((out / "train.jsonl.manifest.json").read_text(encoding="utf-8"))
    prompt_source = manifest["sources"][0]
    assert prompt_source["sha256"] == sha256_file(prompts_path)
    assert prompt_source["upstream"]["generator"]["seed"] == 0
    counts = sum(json.loads((out / f"{n}.jsonl.manifest.json").read_text())["final_count"]
                 for n in ("train", "val", "test"))
    assert counts == len(prompts)


def test_read_responses_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "response": "x"}\n\n{"id": "a", "response": "y"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        read_responses(path)
    path.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":1:"):
        read_responses(path)


def test_dataset_config_validation() -> None:
    with pytest.raises(ValidationError):
        DatasetConfig(val_frac=0.5, test_frac=0.5)
    with pytest.raises(ValidationError):
        DatasetConfig(unknown=1)
