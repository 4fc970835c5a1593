"""Token layout and batching for latent (Coconut-style) reasoning.

At curriculum stage ``s`` the first ``k = min(s, n)`` of an example's ``n`` reasoning steps are replaced by
latent positions between ``<bot>`` and ``<eot>``; the remaining steps stay text::

    prefix  = [bos] + encode(prompt) + [<bot>]
    latents = L positions whose inputs are hidden states (no token, no embedding lookup)
    suffix  = [<eot>] + encode(format_completion(steps[k:], answer)) + [eos]

``L = s * c`` (Coconut's schedule: every example of a stage gets the same count, even one with fewer than
``s`` steps) or, ``adaptive``, ``L = k * c`` (the count follows the example's steps; a halt head learns it).
With no step left as text the suffix is ``<eot><answer>9</answer><eos>``; stage 0 is the full chain of
thought between ``<bot><eot>``.

Batching (:func:`collate_latent`): prefixes are **left**-padded, so every row's ``<bot>`` is the last prefix
column and the latent block starts at the same column for all rows. The latent block is ``max(L)`` wide; a
row with fewer latents has *holes* after its own ones: slots with attention mask 0 (invisible to every later
query, and skipped by the mask-derived position ids), so each row computes exactly what it would alone.
Suffixes are **right**-padded. Labels cover the suffix only (``labels[t] = suffix[t + 1]``): the question,
``<bot>``, the latent slots and ``<eot>`` are never targets; everything after ``<eot>`` is.

Step supervision of the latents (SIM-CoT, Wei et al. 2025): each replaced step ``i`` of a row has a *thought
slot*, the last of its ``c`` latents (``i * c + c - 1``); the vector fed there must decode the step's text
``<step>3*2=6</step>`` (:func:`thought_slot`, :func:`collate_thoughts`; the loss is the curriculum's). The
batch carries one decoder row per replaced step: ``thought_index`` (N, 2) = (row, slot) and the step's ids.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from training.data import IGNORE_INDEX
from training.tasks.markup import STEP_CLOSE, STEP_OPEN, format_completion
from training.tokenizer import SPECIAL_IDS, DistilleryTokenizer, require_native

BOT_ID = SPECIAL_IDS["<bot>"]
EOT_ID = SPECIAL_IDS["<eot>"]
LATENT_ID = SPECIAL_IDS["<latent>"]

__all__ = [
    "BOT_ID",
    "EOT_ID",
    "LATENT_ID",
    "LatentBatch",
    "LatentExample",
    "LatentRow",
    "collate_latent",
    "collate_thoughts",
    "encode_latent_example",
    "latent_count",
    "latent_row",
    "sample_stages",
    "suffix_labels",
    "thought_slot",
]


@dataclass(frozen=True)
class LatentExample:
    """One tokenized example: ``prompt_ids`` (bos + prompt), ``suffixes[k]`` for k = 0..n steps removed
    (each ``[<eot>] + completion + [eos]``) and ``step_ids[i]``, the ids of step ``i`` as written in the
    chain of thought (``<step>3*2=6</step>``), the text its latent thought is supervised to decode."""

    prompt_ids: list[int]
    suffixes: list[list[int]]
    step_ids: list[list[int]] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return len(self.suffixes) - 1


@dataclass(frozen=True)
class LatentRow:
    """One training row: prefix ids (ending in ``<bot>``), the number of latent positions, suffix ids."""

    prefix: list[int]
    n_latents: int
    suffix: list[int]
    stage: int
    latent_steps: tuple[list[int], ...] = ()
    """The ids of the replaced steps (``step_ids[:k]``), one decoder target per step."""


def encode_latent_example(example: Mapping[str, Any], tokenizer: DistilleryTokenizer) -> LatentExample:
    """Tokenize an example with ``prompt``, ``steps`` and ``answer`` for every stage."""
    require_native(tokenizer, "the latent curriculum")
    steps = [str(s) for s in example["steps"]]
    answer = str(example["answer"])
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(str(example["prompt"]))]
    suffixes = []
    for k in range(len(steps) + 1):
        rest = steps[k:]
        text = format_completion(rest, answer, with_steps=bool(rest))
        suffixes.append([EOT_ID, *tokenizer.encode(text), tokenizer.eos_id])
    step_ids = [tokenizer.encode(f"{STEP_OPEN}{step}{STEP_CLOSE}") for step in steps]
    return LatentExample(prompt_ids=prompt_ids, suffixes=suffixes, step_ids=step_ids)


def latent_count(stage: int, n_steps: int, latents_per_step: int, adaptive: bool = False) -> int:
    """Latent positions of an example with ``n_steps`` steps at ``stage``: ``stage * c``, or with ``adaptive``
    ``min(stage, n_steps) * c``."""
    if stage < 0 or n_steps < 0 or latents_per_step < 1:
        raise ValueError(f"need stage >= 0, n_steps >= 0, latents_per_step >= 1; got {stage}, {n_steps}, "
                         f"{latents_per_step}")
    return (min(stage, n_steps) if adaptive else stage) * latents_per_step


def latent_row(example: LatentExample, stage: int, latents_per_step: int, adaptive: bool = False) -> LatentRow:
    """The row of ``example`` at ``stage`` (see the module docstring)."""
    k = min(stage, example.n_steps)
    return LatentRow(prefix=[*example.prompt_ids, BOT_ID],
                     n_latents=latent_count(stage, example.n_steps, latents_per_step, adaptive),
                     suffix=list(example.suffixes[k]), stage=stage,
                     latent_steps=tuple(list(ids) for ids in example.step_ids[:k]))


def thought_slot(step: int, latents_per_step: int) -> int:
    """Latent slot whose fed vector is the thought of replaced step ``step`` (0-based): the last of its ``c``
    slots, ``step * c + c - 1`` (with c = 1, the thought fed at slot ``i`` is the one produced before it)."""
    if step < 0 or latents_per_step < 1:
        raise ValueError(f"need step >= 0 and latents_per_step >= 1, got {step}, {latents_per_step}")
    return step * latents_per_step + latents_per_step - 1


def sample_stages(n: int, current: int, mix_prob: float, rng: random.Random) -> list[int]:
    """Stages of ``n`` rows: each is ``current``, or with probability ``mix_prob`` an earlier stage drawn
    uniformly from ``0 .. current - 1`` (never at stage 0)."""
    if not 0.0 <= mix_prob <= 1.0:
        raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
    out = []
    for _ in range(n):
        if current > 0 and rng.random() < mix_prob:
            out.append(rng.randrange(current))
        else:
            out.append(current)
    return out


def suffix_labels(suffix: Sequence[int]) -> list[int]:
    """(S,) next-token labels of a suffix: ``suffix[t + 1]``, and -100 at the last position."""
    return [*suffix[1:], IGNORE_INDEX]


@dataclass
class LatentBatch:
    """Collated rows. prefix_ids / prefix_mask: (B, P), left-padded, column P-1 is ``<bot>``; latent_counts:
    (B,) long; suffix_ids / suffix_mask / labels: (B, S), right-padded (labels -100 on padding); stages: (B,).
    With ``latents_per_step`` given to :func:`collate_latent`, the step-supervision rows (:func:`collate_thoughts`):
    thought_index (N, 2) long (row, slot); thought_ids / thought_mask (N, T), right-padded."""

    prefix_ids: Tensor
    prefix_mask: Tensor
    latent_counts: Tensor
    suffix_ids: Tensor
    suffix_mask: Tensor
    labels: Tensor
    stages: Tensor
    thought_index: Tensor | None = None
    thought_ids: Tensor | None = None
    thought_mask: Tensor | None = None

    @property
    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def collate_thoughts(rows: Sequence[LatentRow], latents_per_step: int, pad_id: int
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder rows of the replaced steps: (thought_index (N, 2) = (row, :func:`thought_slot`), ids (N, T),
    mask (N, T)), right-padded; N = 0 (shapes (0, 2), (0, 1), (0, 1)) when no row has a latent step."""
    index: list[tuple[int, int]] = []
    targets: list[list[int]] = []
    for b, row in enumerate(rows):
        for i, ids in enumerate(row.latent_steps):
            slot = thought_slot(i, latents_per_step)
            if slot >= row.n_latents:
                raise ValueError(f"row {b}: step {i} has thought slot {slot} but the row has {row.n_latents} latents")
            index.append((b, slot))
            targets.append(list(ids))
    width = max((len(t) for t in targets), default=1)
    ids_t = torch.full((len(targets), width), pad_id, dtype=torch.long)
    mask_t = torch.zeros((len(targets), width), dtype=torch.long)
    for n, target in enumerate(targets):
        ids_t[n, :len(target)] = torch.tensor(target, dtype=torch.long)
        mask_t[n, :len(target)] = 1
    index_t = torch.tensor(index, dtype=torch.long) if index else torch.zeros((0, 2), dtype=torch.long)
    return index_t, ids_t, mask_t


def collate_latent(rows: Sequence[LatentRow], pad_id: int, latents_per_step: int | None = None) -> LatentBatch:
    """Left-pad prefixes, right-pad suffixes (see the module docstring); with ``latents_per_step`` also the
    step-supervision rows (:func:`collate_thoughts`)."""
    if not rows:
        raise ValueError("cannot collate zero rows")
    b = len(rows)
    p = max(len(r.prefix) for r in rows)
    s = max(len(r.suffix) for r in rows)
    prefix_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((b, p), dtype=torch.long)
    suffix_ids = torch.full((b, s), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((b, s), dtype=torch.long)
    labels = torch.full((b, s), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        if not row.prefix or row.prefix[-1] != BOT_ID or not row.suffix or row.suffix[0] != EOT_ID:
            raise ValueError(f"row {i}: a prefix must end with <bot> and a suffix start with <eot>")
        prefix_ids[i, p - len(row.prefix):] = torch.tensor(row.prefix)
        prefix_mask[i, p - len(row.prefix):] = 1
        suffix_ids[i, :len(row.suffix)] = torch.tensor(row.suffix)
        suffix_mask[i, :len(row.suffix)] = 1
        labels[i, :len(row.suffix)] = torch.tensor(suffix_labels(row.suffix))
    thoughts = collate_thoughts(rows, latents_per_step, pad_id) if latents_per_step else (None, None, None)
    return LatentBatch(prefix_ids=prefix_ids, prefix_mask=prefix_mask,
                       latent_counts=torch.tensor([r.n_latents for r in rows], dtype=torch.long),
                       suffix_ids=suffix_ids, suffix_mask=suffix_mask, labels=labels,
                       stages=torch.tensor([r.stage for r in rows], dtype=torch.long),
                       thought_index=thoughts[0], thought_ids=thoughts[1], thought_mask=thoughts[2])
