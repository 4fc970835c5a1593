"""Lineage manifests: ``<output>.manifest.json`` next to every file the prompt bank tools write.

A manifest records where the records came from (sources, generator version and seed, configuration),
what each filter stage took in and let out, the final count and the SHA-256 of the output file. It
holds no timestamps or absolute paths, so regenerating the same data gives the same manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.checksums import sha256_file
from training.prompt_bank.filters import StageCount

MANIFEST_VERSION = 1


def manifest_path(output: Path) -> Path:
    """Where the manifest of ``output`` lives: ``<output>.manifest.json``."""
    return output.with_name(output.name + ".manifest.json")


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write one compact JSON object per line (UTF-8, ``\\n`` endings); returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def build_manifest(output: Path, *, final_count: int, sources: Sequence[Mapping[str, Any]],
                   stages: Sequence[StageCount], config: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an already written ``output`` file."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "output": output.name,
        "sha256": sha256_file(output),
        "final_count": final_count,
        "sources": [dict(source) for source in sources],
        "filters": [stage.as_dict() for stage in stages],
        "config": dict(config or {}),
        **dict(extra or {}),
    }


def write_with_manifest(output: Path, records: Sequence[Mapping[str, Any]], *,
                        sources: Sequence[Mapping[str, Any]], stages: Sequence[StageCount],
                        config: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``records`` to ``output`` as JSONL and its manifest next to it; return the manifest."""
    count = write_jsonl(output, records)
    manifest = build_manifest(output, final_count=count, sources=sources, stages=stages, config=config,
                              extra=extra)
    manifest_path(output).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    return manifest


def counts_add_up(manifest: Mapping[str, Any]) -> bool:
    """Whether the filter chain is consistent: each stage's out is the next stage's in, every
    ``removed == in - out``, and the last out equals ``final_count``."""
    filters = manifest["filters"]
    if not filters:
        return True
    chained = all(a["out"] == b["in"] for a, b in zip(filters, filters[1:], strict=False))
    arithmetic = all(f["removed"] == f["in"] - f["out"] >= 0 for f in filters)
    return chained and arithmetic and filters[-1]["out"] == manifest["final_count"]
