"""Precompute a top-k teacher cache::

    python -m training.teacher_cache --teacher SPEC --data FILE.jsonl --out DIR --top-k K \\
        [--temperature T] [--max-length N]

Runs a live teacher (``checkpoint:DIR``, ``hf:DIR``, ``http://HOST:PORT/v1`` with ``--teacher-opt model=...
--teacher-opt tokenizer=DIR``, or a YAML file of teacher fields) once over the examples, encoded as the
trainer encodes them, and writes memory-mapped shards of per-position top-k ids, log-probs and tail mass
plus ``manifest.json`` (shard hashes, tokenizer fingerprint, k, temperature, bytes_per_token, compression KL).
Interrupted builds resume: rerun the same command. Train with ``teacher: {kind: cache, path: DIR}``;
list validation files too (``--data train.jsonl --data val.jsonl``) so evaluation finds them.
"""

from __future__ import annotations

import argparse
import json
import sys

from training.teachers.cache_builder import CacheSettings, build_topk_cache
from training.teachers.spec import add_teacher_arguments, teacher_from_arguments
from training.user_errors import user_error_exit


def _fraction(text: str) -> float:
    """An argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.teacher_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_teacher_arguments(parser, sources="checkpoint:DIR, hf:DIR, http://HOST:PORT/v1, DIR or FILE.yaml",
                          examples="model=NAME tokenizer=DIR top_k=32")
    parser.add_argument("--data", action="append", required=True, help="JSONL/Parquet examples (repeatable)")
    parser.add_argument("--out", required=True, help="cache directory (created; resumed when interrupted)")
    parser.add_argument("--top-k", type=int, required=True, help="K ids kept per position")
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="store softmax(logits / T); T != 1 caches are trained with loss.temperature=1",
    )
    parser.add_argument("--max-length", type=int, default=128, help="the trainer's data.max_length")
    parser.add_argument("--truncate", action="store_true", help="the trainer's data.truncate")
    parser.add_argument(
        "--positions",
        choices=("all", "completion"),
        default="all",
        help="store every position, or only from the last prompt token on (smaller)",
    )
    parser.add_argument(
        "--ids",
        choices=("auto", "packed", "uint16"),
        default="auto",
        help="id storage: bit-packed ceil(log2 V) bits or uint16 (auto: uint16 only if V needs 16 bits)",
    )
    parser.add_argument("--logprobs", choices=("q8", "fp16"), default="q8", help="log-prob storage")
    parser.add_argument("--shard-size", type=int, default=4096, help="sequences per shard")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per teacher call")
    parser.add_argument("--max-bad-fraction", type=_fraction, default=0.01,
                        help="share of malformed lines tolerated (quarantined to OUT/quarantine.jsonl); over it "
                             "the build stops (exit 2), as the trainer's data.max_bad_fraction")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    from training.teachers.factory import build_teacher

    args = build_parser().parse_args(argv)
    section = teacher_from_arguments(args)
    if section.kind == "cache":
        print("error: --teacher must be a live source (checkpoint, hf or http), not a cache", file=sys.stderr)
        return 2
    settings = CacheSettings(
        k=args.top_k,
        temperature=args.temperature,
        max_length=args.max_length,
        truncate=args.truncate,
        positions=args.positions,
        ids=args.ids,
        logprobs=args.logprobs,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        max_bad_fraction=args.max_bad_fraction,
    )
    teacher = build_teacher(section)
    manifest = build_topk_cache(
        teacher,
        args.data,
        args.out,
        settings,
        teacher_description=section.model_dump(mode="json"),
        progress=not args.no_progress,
    )
    summary = {
        "out": args.out,
        "k": manifest.k,
        "bytes_per_token": manifest.bytes_per_token,
        **manifest.totals,
        **manifest.kl,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
