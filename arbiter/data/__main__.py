"""Command line: ``python -m arbiter.data --n N --out DIR`` writes prompt-disjoint preference pairs.

DIR receives ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` (one :class:`arbiter.data.PreferencePair`
a line) for the bundled arithmetic task; test prompts are held out (:func:`training.data.toy_data.is_heldout`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from arbiter.data.generate import build_splits, split_counts
from arbiter.data.schema import write_pairs


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m arbiter.data",
        description="Generate pairwise preference data (correct vs corrupted vs malformed solutions, with "
                    "clause and step labels from the task verifiers) for the bundled arithmetic task and "
                    "write train.jsonl, val.jsonl and test.jsonl. One prompt per pair; splits share no prompt "
                    "and test uses held-out prompts only.",
    )
    parser.add_argument("--n", type=int, required=True, help="total number of pairs before splitting")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument("--val-frac", type=float, default=0.1, help="fraction of pairs for val (default 0.1)")
    parser.add_argument("--test-frac", type=float, default=0.1, help="fraction of pairs for test (default 0.1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    try:
        counts = split_counts(args.n, args.val_frac, args.test_frac)
    except ValueError as exc:
        parser.error(str(exc))
    splits = build_splits(*counts, seed=args.seed)
    for name, pairs in splits.items():
        path = args.out / f"{name}.jsonl"
        write_pairs(path, pairs)
        winners = Counter(pair.winner for pair in pairs)
        print(f"{path}: {len(pairs)} pairs (a {winners['a']}, b {winners['b']}, tie {winners['tie']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
