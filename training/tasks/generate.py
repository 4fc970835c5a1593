"""Command line: generate a bundled task and write prompt-disjoint ``train/val/test.jsonl``.

Example: ``python -m training.tasks.generate --task arithmetic --n 2000 --seed 0 --out data/arith``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.tasks import TASKS
from training.tasks.jsonl import write_jsonl
from training.tasks.splits import split_by_prompt


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m training.tasks.generate",
        description="Generate a bundled task and write train.jsonl, val.jsonl and test.jsonl. "
        "Examples sharing a prompt always go to the same split.",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="which task to generate")
    parser.add_argument("--n", type=int, required=True, help="number of examples before splitting")
    parser.add_argument("--seed", type=int, default=0, help="seed for generation and splitting (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument(
        "--val-frac", type=float, default=0.1, help="fraction of distinct prompts for val (default 0.1)"
    )
    parser.add_argument(
        "--test-frac", type=float, default=0.1, help="fraction of distinct prompts for test (default 0.1)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    examples = TASKS[args.task].generate(args.n, args.seed)
    try:
        splits = split_by_prompt(examples, args.val_frac, args.test_frac, args.seed)
    except ValueError as error:
        parser.error(str(error))
    for name in ("train", "val", "test"):
        records = getattr(splits, name)
        path = args.out / f"{name}.jsonl"
        write_jsonl(path, records)
        distinct = len({record["prompt"] for record in records})
        print(f"{path}: {len(records)} examples, {distinct} distinct prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
