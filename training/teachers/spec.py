"""``--teacher SPEC`` for the command-line tools: a short string (or a config file) -> a validated
:class:`~training.teachers.config.TeacherSection`.

Forms of SPEC:

* ``checkpoint:DIR``, ``hf:DIR``, ``cache:DIR`` — that kind with ``path=DIR``;
* ``http://HOST:PORT/v1`` (or ``http:URL``) — ``kind='http'`` with that ``url``;
* ``FILE.yaml`` / ``FILE.json`` — a mapping with the section's fields;
* ``DIR`` — guessed: a top-k cache, a Distillery artifact (``manifest.json``), or an HF directory.

``--teacher-opt KEY=VALUE`` (repeatable, YAML values) sets other fields, e.g. ``model=tiny``,
``tokenizer=DIR``, ``top_k=32``, ``api_key_env=MY_KEY``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from training.teachers.config import TeacherSection
from training.teachers.topk_storage import CACHE_FORMAT, MANIFEST_FILE

_KINDS = ("checkpoint", "hf", "http", "cache")


class TeacherSpecError(ValueError):
    """A ``--teacher`` argument or ``--teacher-opt`` cannot be turned into a valid teacher section."""


def _guess_directory_kind(path: Path) -> str:
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        try:
            fmt = json.loads(manifest.read_text()).get("format")
        except (OSError, json.JSONDecodeError, AttributeError):
            fmt = None
        return "cache" if fmt == CACHE_FORMAT else "checkpoint"
    if (path / "config.json").is_file():
        return "hf"
    raise TeacherSpecError(f"{path} holds neither a top-k cache, a Distillery artifact nor a config.json")


def spec_to_mapping(spec: str) -> dict[str, Any]:
    """The section fields a SPEC string names (before ``--teacher-opt`` and validation)."""
    if spec.startswith(("http://", "https://")):
        return {"kind": "http", "url": spec}
    kind, sep, rest = spec.partition(":")
    if sep and kind in _KINDS and rest:
        return {"kind": kind, "url": rest} if kind == "http" else {"kind": kind, "path": rest}
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json"):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise TeacherSpecError(f"{path} must hold a mapping of teacher fields")
        return data
    if path.is_dir():
        return {"kind": _guess_directory_kind(path), "path": spec}
    raise TeacherSpecError(
        f"--teacher {spec!r}: expected KIND:PATH (kinds {_KINDS}), an http(s) URL, a YAML/JSON "
        "file, or an existing directory"
    )


def parse_teacher_spec(spec: str, options: Sequence[str] = ()) -> TeacherSection:
    """SPEC + ``KEY=VALUE`` options -> a validated section (errors name the offending fields)."""
    data = spec_to_mapping(spec)
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise TeacherSpecError(f"--teacher-opt {option!r} must look like key=value")
        data[key] = yaml.safe_load(raw) if raw != "" else ""
    try:
        return TeacherSection.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'teacher'}: {e['msg']}" for e in exc.errors()
        )
        raise TeacherSpecError(f"invalid teacher {spec!r}: {problems}") from exc


def add_teacher_arguments(parser: argparse.ArgumentParser, *, sources: str, examples: str) -> None:
    """``--teacher`` (a spec for :func:`parse_teacher_spec`: ``sources`` lists the forms this command
    accepts), ``--teacher-opt KEY=VALUE`` (repeatable; ``examples`` shows some) and ``--threads``."""
    parser.add_argument("--teacher", required=True, help=sources)
    parser.add_argument("--teacher-opt", action="append", default=[], metavar="KEY=VALUE",
                        help=f"other teacher fields, e.g. {examples} (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def teacher_from_arguments(args: argparse.Namespace) -> TeacherSection:
    """The other half of :func:`add_teacher_arguments`, at the start of a command's ``main``: applies
    ``--threads`` (torch CPU threads, when given) and returns the section of ``--teacher`` /
    ``--teacher-opt`` (:func:`parse_teacher_spec`)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return parse_teacher_spec(args.teacher, args.teacher_opt)
