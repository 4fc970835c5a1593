"""CLI: write the prompt bank and its manifest.

``python -m training.prompt_bank --out assets/prompts/prompts.jsonl`` regenerates the committed bank.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.prompt_bank.generate import GENERATOR_VERSION, Bank, BankConfig, build_bank
from training.prompt_bank.manifest import write_with_manifest
from training.prompt_bank.templates import SLOTS, TEMPLATES


def bank_lineage(config: BankConfig) -> dict[str, Any]:
    """The generator description stored in the bank's manifest."""
    return {"name": "training.prompt_bank", "version": GENERATOR_VERSION, "seed": config.seed,
            "templates": len(TEMPLATES), "slot_values": sum(len(values) for values in SLOTS.values())}


def write_bank(bank: Bank, out: Path, config: BankConfig) -> dict[str, Any]:
    """Write the bank JSONL and ``<out>.manifest.json``; return the manifest."""
    generator = bank_lineage(config)
    return write_with_manifest(
        out, bank.records,
        sources=[{"kind": "templates", "generator": generator["name"], "version": generator["version"],
                  "seed": config.seed}],
        stages=bank.stages, config=config.model_dump(mode="json"),
        extra={"generator": generator, "category_counts": bank.category_counts},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the bank with ``--seed``/``--per-category`` and write it to ``--out``."""
    parser = argparse.ArgumentParser(description="Generate the bundled prompt bank (no downloads).")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL, e.g. assets/prompts/prompts.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-category", type=int, default=BankConfig().per_category)
    args = parser.parse_args(argv)
    config = BankConfig(seed=args.seed, per_category=args.per_category)
    manifest = write_bank(build_bank(config), args.out, config)
    print(json.dumps({"out": str(args.out), "final_count": manifest["final_count"],
                      "sha256": manifest["sha256"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
