"""``python -m arbiter.schemas --out arbiter/schemas [--check]``: write (or check) the JSON Schemas."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arbiter.schemas import stale_schemas, write_schemas


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when written (or up to date with --check), 1 when --check finds differences."""
    parser = argparse.ArgumentParser(
        prog="python -m arbiter.schemas",
        description="Generate the JSON Schemas of the judge verdicts and the preference-pair record.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the *.schema.json files")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when files differ")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_schemas(args.out)
        for problem in problems:
            print(f"{args.out}/{problem}", file=sys.stderr)
        if problems:
            print("regenerate with: python -m arbiter.schemas --out arbiter/schemas", file=sys.stderr)
        return 1 if problems else 0
    for path in write_schemas(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
