"""Step-labelled data for process supervision: prompt-disjoint train/val/test JSONL where a share of the
training examples gets a corrupted solution with ``step_labels`` (the encoding is in
:mod:`training.reasoning.step_data`)::

    python -m training.step_data --task arithmetic --n 4000 --corrupt-fraction 0.5 --out data/process
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.reasoning.step_data import mix_corrupted
from training.tasks import get_task
from training.tasks.jsonl import write_jsonl
from training.tasks.splits import split_by_prompt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.step_data",
        description="Write prompt-disjoint train/val/test JSONL for process supervision: a share of the "
        "training examples gets a corrupted solution with step_labels (val and test stay clean).",
    )
    parser.add_argument("--task", default="arithmetic", help="bundled task (corruption: arithmetic only)")
    parser.add_argument("--n", type=int, required=True, help="examples generated before splitting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corrupt-fraction", type=float, default=0.5,
                        help="share of training examples that get a corrupted solution")
    parser.add_argument("--corrupt-mode", choices=("add", "replace"), default="add",
                        help="add the corrupted copy next to the original, or replace it")
    parser.add_argument("--val-frac", type=float, default=0.1)
    parser.add_argument("--test-frac", type=float, default=0.1)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.corrupt_fraction > 0 and args.task != "arithmetic":
        parser.error("--corrupt-fraction > 0 needs --task arithmetic (the only task with corruptions)")
    try:
        examples = get_task(args.task).generate(args.n, args.seed)
        splits = split_by_prompt(examples, args.val_frac, args.test_frac, args.seed)
        train = mix_corrupted(splits.train, args.corrupt_fraction, args.seed, args.corrupt_mode)
    except (KeyError, ValueError) as error:
        parser.error(str(error))
    for name, records in (("train", train), ("val", splits.val), ("test", splits.test)):
        path = args.out / f"{name}.jsonl"
        write_jsonl(path, records)
        wrong = sum(1 for r in records if 0.0 in (r.get("step_labels") or []))
        print(f"{path}: {len(records)} examples, {wrong} with a wrong step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
