"""The filter pipeline from bank prompts + teacher responses to train/val/test chat files.

Order: prompts are deduplicated (exact, then length, then near duplicates) *before* anything is split,
so no near-copy of a val/test prompt stays in train; then prompts are joined with the teacher's
responses (:func:`~training.prompt_bank.records.build_records`), degenerate responses are dropped
(length, repetition), and the survivors are split by a hash of their id. Every stage's in/out counts go
into the lineage manifest written next to each split file.

The teacher's responses are produced elsewhere (the pipeline calls the teacher's ``generate``); here they
are a ``{prompt id: response text}`` mapping, or a JSONL file of ``{"id", "response"}`` lines for the CLI::

    python -m training.prompt_bank.dataset --prompts assets/prompts/prompts.jsonl \\
        --responses runs/x/responses.jsonl --out runs/x/chat
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from training.config_base import FrozenStrictModel
from training.prompt_bank.filters import (
    LengthLimits,
    NearDupConfig,
    RepetitionLimits,
    StageCount,
    apply_stages,
    exact_dedup,
    length_filter,
    near_dedup,
    repetition_filter,
)
from training.prompt_bank.generate import PromptRecord
from training.prompt_bank.manifest import manifest_path, sha256_file, write_with_manifest
from training.prompt_bank.records import SPLITS, ChatRecord, SplitName, build_records, split_records


class DatasetConfig(FrozenStrictModel):
    """Filter thresholds and split fractions (defaults suit a small chat model with short answers)."""

    near_dup: NearDupConfig = NearDupConfig()
    prompt_length: LengthLimits = LengthLimits(min_chars=8, max_chars=2000)
    response_length: LengthLimits = LengthLimits(min_chars=2, max_chars=4000)
    repetition: RepetitionLimits = RepetitionLimits()
    val_frac: float = Field(default=0.05, ge=0.0, lt=1.0)
    test_frac: float = Field(default=0.05, ge=0.0, lt=1.0)
    salt: str = "prompt-bank"

    @model_validator(mode="after")
    def _fractions(self) -> DatasetConfig:
        if self.val_frac + self.test_frac >= 1.0:
            raise ValueError(f"val_frac + test_frac must be < 1, got {self.val_frac + self.test_frac}")
        return self


@dataclass(frozen=True)
class Dataset:
    """Records per split and the stage counts that produced them."""

    splits: dict[SplitName, list[ChatRecord]]
    stages: list[StageCount]

    @property
    def total(self) -> int:
        """Records over all splits."""
        return sum(len(records) for records in self.splits.values())


def _prompt(record: PromptRecord) -> str:
    return record["prompt"]


def _response(record: ChatRecord) -> str:
    return record["messages"][-1]["content"]


def build_dataset(prompts: Sequence[PromptRecord], responses: Mapping[str, str],
                  config: DatasetConfig | None = None,
                  count_tokens: Callable[[str], int] | None = None) -> Dataset:
    """Filter, join and split (see the module docstring); ``count_tokens`` enables token length limits."""
    config = config or DatasetConfig()
    kept, prompt_stages = apply_stages(prompts, [
        ("exact_dup", lambda items: exact_dedup(items, key=_prompt)),
        ("prompt_length", lambda items: length_filter(items, config.prompt_length, _prompt, count_tokens)),
        ("near_dup", lambda items: near_dedup(items, key=_prompt, config=config.near_dup)),
    ])
    kept_ids = {prompt["id"] for prompt in kept}
    records = build_records(kept, {key: text for key, text in responses.items() if key in kept_ids})
    joined = StageCount("missing_response", len(kept), len(records))
    records, response_stages = apply_stages(records, [
        ("response_length", lambda items: length_filter(items, config.response_length, _response, count_tokens)),
        ("repetition", lambda items: repetition_filter(items, config.repetition, key=_response)),
    ])
    splits = split_records(records, config.val_frac, config.test_frac, config.salt)
    return Dataset(splits=splits, stages=[*prompt_stages, joined, *response_stages])


def write_dataset(dataset: Dataset, out_dir: Path, *, sources: Sequence[Mapping[str, Any]],
                  config: DatasetConfig) -> dict[SplitName, dict[str, Any]]:
    """Write ``<out_dir>/<split>.jsonl`` and a manifest next to each; return the manifests by split.

    Each manifest's filter chain ends with a ``split:<name>`` stage (all records in, this split out).
    """
    manifests: dict[SplitName, dict[str, Any]] = {}
    for name in SPLITS:
        records = dataset.splits[name]
        stages = [*dataset.stages, StageCount(f"split:{name}", dataset.total, len(records))]
        manifests[name] = write_with_manifest(out_dir / f"{name}.jsonl", records, sources=sources,
                                              stages=stages, config=config.model_dump(mode="json"),
                                              extra={"split": name})
    return manifests


def read_responses(path: Path) -> dict[str, str]:
    """``{id: response}`` from a JSONL file of ``{"id", "response"}`` lines; a repeated id is an error."""
    responses: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str) \
                    or not isinstance(record.get("response"), str):
                raise ValueError(f"{path}:{number}: expected {{\"id\": str, \"response\": str}}")
            if record["id"] in responses:
                raise ValueError(f"{path}:{number}: id {record['id']!r} appears twice")
            responses[record["id"]] = record["response"]
    return responses


def read_prompts(path: Path) -> list[PromptRecord]:
    """The prompt records of a bank file (one JSON object a line)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def file_source(kind: str, path: Path) -> dict[str, Any]:
    """A manifest source entry for an input file, with its hash and, if it has one, its own manifest's
    generator and sources (lineage is carried forward)."""
    source: dict[str, Any] = {"kind": kind, "path": str(path), "sha256": sha256_file(path)}
    upstream = manifest_path(path)
    if upstream.exists():
        parent = json.loads(upstream.read_text(encoding="utf-8"))
        source["upstream"] = {key: parent[key] for key in ("generator", "sources", "final_count") if key in parent}
    return source


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: bank prompts + teacher responses -> split chat files with manifests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, required=True, help="prompt bank JSONL")
    parser.add_argument("--responses", type=Path, required=True, help='JSONL of {"id", "response"} lines')
    parser.add_argument("--out", type=Path, required=True, help="directory for train/val/test.jsonl")
    parser.add_argument("--val-frac", type=float, default=0.05)
    parser.add_argument("--test-frac", type=float, default=0.05)
    args = parser.parse_args(argv)
    config = DatasetConfig(val_frac=args.val_frac, test_frac=args.test_frac)
    dataset = build_dataset(read_prompts(args.prompts), read_responses(args.responses), config)
    sources = [file_source("prompts", args.prompts), file_source("teacher_responses", args.responses)]
    manifests = write_dataset(dataset, args.out, sources=sources, config=config)
    print(json.dumps({name: manifest["final_count"] for name, manifest in manifests.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
