"""Bundled-task datasets for the toy pipelines, with a fixed held-out rule shared by teacher and students.

A prompt is *held out* when ``sha256(prompt) mod 10 == 0``. The bundled teacher never trains on held-out
prompts, and students are evaluated only on held-out prompts, so no evaluation prompt was seen in
training by anyone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from training.tasks import get_task

HELDOUT_MODULUS = 10


def is_heldout(prompt: str) -> bool:
    """True for the ~10% of prompts reserved for evaluation."""
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % HELDOUT_MODULUS == 0


def task_examples(task: str, n: int, seed: int, heldout: bool, unique: bool = True) -> list[dict[str, Any]]:
    """``n`` examples of ``task`` whose prompts are (``heldout=True``) or are not held out.

    With ``unique`` prompts do not repeat within the list (tasks with small prompt spaces, such as
    eightball, need ``unique=False`` for large training sets). Generates in rounds until enough are found.
    """
    generator = get_task(task).generate
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    round_seed = seed
    attempts = 0
    while len(out) < n:
        batch = generator(max(64, 4 * (n - len(out)) * (HELDOUT_MODULUS if heldout else 1)), round_seed)
        fresh = 0
        for example in batch:
            prompt = example["prompt"]
            if (unique and prompt in seen) or is_heldout(prompt) != heldout:
                continue
            seen.add(prompt)
            out.append(dict(example))
            fresh += 1
            if len(out) == n:
                break
        attempts = attempts + 1 if fresh == 0 else 0
        if attempts >= 3:
            raise ValueError(f"task {task!r} has fewer than {n} distinct {'held-out' if heldout else 'training'} "
                             f"prompts (found {len(out)})")
        round_seed += 1_000_003
    return out


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records one JSON object a line; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file written by :func:`write_jsonl` (trusted, produced in this run)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
