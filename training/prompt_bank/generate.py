"""Deterministic generation of the prompt bank from the templates and slot vocabularies.

For each category, every template draws distinct prompts with its own random generator (seeded by the
bank seed and the template name, so adding a template elsewhere does not change the others), and the
category's candidates interleave the templates round-robin. All candidates then pass the filters
(exact duplicates, length, near duplicates) and each category is capped at ``per_category`` prompts,
taken in candidate order, so every template contributes about equally and no category dominates.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from pydantic import Field

from training.config_base import FrozenStrictModel
from training.prompt_bank.filters import (
    LengthLimits,
    NearDupConfig,
    StageCount,
    apply_stages,
    exact_dedup,
    length_filter,
    near_dedup,
)
from training.prompt_bank.templates import SLOTS, TEMPLATES, Template, vocab_name

GENERATOR_VERSION = "1"  # bump when templates, vocabularies or the sampling change the bank


class PromptRecord(TypedDict):
    """One line of the bank: ``source`` is ``template:<template name>``."""

    id: str
    prompt: str
    category: str
    source: str


class BankConfig(FrozenStrictModel):
    """How the bank is generated (validated at the edge: the CLI and callers build one of these)."""

    seed: int = 0
    per_category: int = Field(default=140, ge=1, le=10_000)
    oversample: float = Field(default=1.5, ge=1.0, le=20.0)
    near_dup: NearDupConfig = NearDupConfig()
    length: LengthLimits = LengthLimits(min_chars=8, max_chars=800)


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt: ``pb-`` and the first 12 hex digits of the SHA-256 of its text."""
    return "pb-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def render(template: Template, rng: random.Random) -> str:
    """Fill ``template`` with values drawn by ``rng``; the first character is upper-cased.

    Placeholders of one vocabulary (``animal``, ``animal_2``) get distinct values.
    """
    values = dict(template.derive(rng)) if template.derive else {}
    wanted: dict[str, list[str]] = {}
    for placeholder in template.placeholders:
        if placeholder not in values:
            wanted.setdefault(vocab_name(placeholder), []).append(placeholder)
    for vocab, placeholders in wanted.items():
        if vocab not in SLOTS:
            raise KeyError(f"template {template.name}: no vocabulary or derived value for {placeholders}")
        for placeholder, value in zip(placeholders, rng.sample(SLOTS[vocab], len(placeholders)), strict=True):
            values[placeholder] = value
    text = template.text.format(**values)
    return text[:1].upper() + text[1:]


def template_prompts(template: Template, seed: int, count: int) -> list[str]:
    """Up to ``count`` distinct prompts from ``template`` (fewer when its slot space is small)."""
    rng = random.Random(f"prompt-bank:{seed}:{template.name}")
    prompts: dict[str, None] = {}
    for _ in range(count * 30):
        if len(prompts) >= count:
            break
        prompts.setdefault(render(template, rng))
    return list(prompts)


def category_candidates(templates: Sequence[Template], seed: int, count: int) -> list[PromptRecord]:
    """About ``count`` candidates of one category: its templates' prompts interleaved round-robin."""
    if not templates:
        return []
    per_template = math.ceil(count / len(templates))
    lists = [(template, template_prompts(template, seed, per_template)) for template in templates]
    records: list[PromptRecord] = []
    for position in range(per_template):
        for template, prompts in lists:
            if position < len(prompts):
                text = prompts[position]
                records.append(PromptRecord(id=prompt_id(text), prompt=text, category=template.category,
                                            source=f"template:{template.name}"))
    return records


def generate_candidates(config: BankConfig, templates: Sequence[Template] = TEMPLATES) -> list[PromptRecord]:
    """Every category's candidates (``per_category * oversample`` each), category by category."""
    by_category: dict[str, list[Template]] = {}
    for template in templates:
        by_category.setdefault(template.category, []).append(template)
    count = math.ceil(config.per_category * config.oversample)
    return [record for group in by_category.values()
            for record in category_candidates(group, config.seed, count)]


def cap_per_category(records: Sequence[PromptRecord], limit: int) -> list[PromptRecord]:
    """The first ``limit`` records of each category, in input order."""
    seen: Counter[str] = Counter()
    kept: list[PromptRecord] = []
    for record in records:
        if seen[record["category"]] < limit:
            seen[record["category"]] += 1
            kept.append(record)
    return kept


@dataclass(frozen=True)
class Bank:
    """The generated prompts and what each stage did on the way."""

    records: list[PromptRecord]
    stages: list[StageCount]

    @property
    def category_counts(self) -> dict[str, int]:
        """Prompts per category, in order of first appearance."""
        return dict(Counter(record["category"] for record in self.records))


def _prompt(record: PromptRecord) -> str:
    return record["prompt"]


def build_bank(config: BankConfig | None = None, templates: Sequence[Template] = TEMPLATES) -> Bank:
    """Generate, filter and cap the bank (same config, same bank)."""
    config = config or BankConfig()
    candidates = generate_candidates(config, templates)
    records, stages = apply_stages(candidates, [
        ("exact_dup", lambda items: exact_dedup(items, key=_prompt)),
        ("length", lambda items: length_filter(items, config.length, key=_prompt)),
        ("near_dup", lambda items: near_dedup(items, key=_prompt, config=config.near_dup)),
        ("category_cap", lambda items: cap_per_category(items, config.per_category)),
    ])
    return Bank(records=records, stages=stages)
