"""Prompts + teacher-written responses -> chat training records, and deterministic hash splits.

A chat record is what :mod:`training.data` reads (``messages`` in OpenAI chat form, one user turn and one
assistant turn), keeping the prompt's ``id`` and ``category``. The split of a record depends only on a
hash of its id (and a salt), so it never changes when records are added, removed or reordered. Split
*after* removing duplicates and near duplicates, so that no near-copy of a test prompt is trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict

from training.prompt_bank.generate import PromptRecord

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")


class ChatMessage(TypedDict):
    """One chat turn."""

    role: str
    content: str


class ChatRecord(TypedDict):
    """One training record: the prompt as the user turn, the teacher's response as the assistant turn."""

    id: str
    messages: list[ChatMessage]
    category: str


def build_records(prompts: Sequence[PromptRecord], responses: Mapping[str, str]) -> list[ChatRecord]:
    """One chat record per prompt that has a non-blank response (``responses`` maps prompt id -> text).

    Prompts without a response (the teacher failed or was not asked) are skipped -- the caller counts
    them; responses are stripped of surrounding whitespace. Raises ``ValueError`` for a response whose
    id is not among the prompts (a sign that prompts and responses come from different runs) and for
    duplicate prompt ids.
    """
    ids = [prompt["id"] for prompt in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate prompt ids: deduplicate the prompts before building records")
    unknown = sorted(set(responses) - set(ids))
    if unknown:
        raise ValueError(f"{len(unknown)} responses have no prompt, e.g. {unknown[:3]}")
    records: list[ChatRecord] = []
    for prompt in prompts:
        response = responses.get(prompt["id"], "").strip()
        if response:
            records.append(ChatRecord(
                id=prompt["id"],
                messages=[ChatMessage(role="user", content=prompt["prompt"]),
                          ChatMessage(role="assistant", content=response)],
                category=prompt["category"],
            ))
    return records


def split_of(record_id: str, val_frac: float, test_frac: float, salt: str = "prompt-bank") -> SplitName:
    """The split of ``record_id``: a uniform number from ``sha256(salt:id)`` below ``val_frac`` is val,
    below ``val_frac + test_frac`` test, else train."""
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError(f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1, got {val_frac}, {test_frac}")
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < val_frac:
        return "val"
    return "test" if position < val_frac + test_frac else "train"


def split_records(records: Sequence[ChatRecord], val_frac: float = 0.05, test_frac: float = 0.05,
                  salt: str = "prompt-bank") -> dict[SplitName, list[ChatRecord]]:
    """Records per split (each in input order), by :func:`split_of` of their ids."""
    splits: dict[SplitName, list[ChatRecord]] = {name: [] for name in SPLITS}
    for record in records:
        splits[split_of(record["id"], val_frac, test_frac, salt)].append(record)
    return splits
