"""Write ``docs/config_reference.md``: every key of every user-facing config, from the pydantic models.

    python -m scripts.config_reference            # regenerate docs/config_reference.md
    python -m scripts.config_reference --check    # exit 1 when the file is out of date

One table per config model (:data:`CONFIGS`): the key path (``section.key`` as written in YAML, or the
field of a CLI options object), its type, its default and its ``description``. Nested sections are
expanded in place. ``tests/unit/scripts/test_config_reference.py`` fails when a field has no description
or when the committed file differs from :func:`render`, so a new field needs a description and a rerun.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "config_reference.md"


@dataclass(frozen=True)
class ConfigDoc:
    """One documented config model: ``target`` is ``module:Class``; with ``base``, only the keys that the
    model adds to (or changes from) that model are listed."""

    title: str
    target: str
    used_by: str
    base: str | None = None

    def model(self) -> type[BaseModel]:
        return load(self.target)


CONFIGS: tuple[ConfigDoc, ...] = (
    ConfigDoc("KD training run", "training.kd.config:KDConfig",
              "`python -m training.distill_kd --config FILE.yaml [key.path=value ...]` (e.g. `configs/toy_kd.yaml`, "
              "`configs/student_from_teacher.yaml`)"),
    ConfigDoc("Process-supervised distillation", "training.distill_process:ProcessConfig",
              "`python -m training.distill_process --config configs/process.yaml [key.path=value ...]`",
              base="training.kd.config:KDConfig"),
    ConfigDoc("Bundled pipeline (`make distill`)", "training.pipeline:PipelineConfig",
              "`python -m training.pipeline --config configs/toy.yaml`"),
    ConfigDoc("LLM distillation pipeline (`make distill-smollm2`)", "training.llm_pipeline:LLMPipelineConfig",
              "`python -m training.llm_pipeline --config configs/smollm2.yaml`"),
    ConfigDoc("Bundled teacher recipe", "training.train_teacher:TeacherRecipe",
              "`python -m training.train_teacher --config configs/teacher.yaml`"),
    ConfigDoc("Judge training", "arbiter.judge_training.config:JudgeTrainConfig",
              "`python -m arbiter.judge_training.train --config configs/judge.yaml`"),
    ConfigDoc("Core ML conversion options", "conversion.convert_coreml:CoreMLOptions",
              "the flags of `python -m conversion.convert_coreml` (`--seq-lens` for `seq_lens`, ...)"),
    ConfigDoc("ONNX export options", "conversion.export_onnx:OnnxExportConfig",
              "the arguments and flags of `python -m conversion.export_onnx`"),
    ConfigDoc("torch.export options", "conversion.export_pytorch:PytorchExportConfig",
              "the arguments and flags of `python -m conversion.export_pytorch`"),
    ConfigDoc("Judge Core ML conversion options", "arbiter.judge_coreml:JudgeCoreMLOptions",
              "the flags of `python -m arbiter.judge_coreml`"),
    ConfigDoc("Judge ONNX export options", "arbiter.judge_export:JudgeExportConfig",
              "the arguments and flags of `python -m arbiter.judge_export`"),
    ConfigDoc("Reasoning students (`make reasoning`)", "training.reasoning_pipeline:ReasoningConfig",
              "`python -m training.reasoning_pipeline --config configs/reasoning.yaml` (its `latent` section is the "
              "latent curriculum's config, `training.reasoning.latent_curriculum.LatentCurriculumConfig`)"),
)
"""The documented models."""


def load(target: str) -> type[BaseModel]:
    """``"module:Class"`` -> the class."""
    module, _, name = target.partition(":")
    model = getattr(importlib.import_module(module), name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{target} is not a pydantic model")
    return model


def sections(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds directly (``Section``, ``Section | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in sections(arg)]
    return []


def walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo, type[BaseModel]]]:
    """``(key path, field, owning model)`` of every field, sections expanded after their own row."""
    for name, field in model.model_fields.items():
        yield prefix + name, field, model
        for section in sections(field.annotation):
            yield from walk(section, f"{prefix}{name}.")


def format_type(annotation: Any) -> str:
    """A short, stable spelling of a field's type."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"section ({annotation.__name__})"
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(format_type(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else format_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is Any:
        return "any"
    return str(annotation).replace("typing.", "")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def format_default(field: FieldInfo) -> str:
    """``required``, ``(section)`` for a nested section, else the default as JSON (as YAML reads it)."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    text = json.dumps(_plain(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _same(a: FieldInfo, b: FieldInfo) -> bool:
    return (a.annotation, a.description, format_default(a)) == (b.annotation, b.description, format_default(b))


def table(config: ConfigDoc) -> list[str]:
    """The markdown section of one config model."""
    model = config.model()
    inherited = {}
    if config.base is not None:
        inherited = {path: field for path, field, _ in walk(load(config.base))}
    lines = [f"## {config.title}", "", f"`{config.target.replace(':', '.')}`, read by {config.used_by}.", ""]
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ").replace("``", "`")
    if doc:
        lines += [doc, ""]
    if config.base is not None:
        lines += [f"Every key of `{config.base.replace(':', '.')}` applies; the keys below are added or "
                  "changed.", ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for path, field, _ in walk(model):
        if path in inherited and _same(inherited[path], field):
            continue
        lines.append(f"| `{path}` | {_cell(format_type(field.annotation))} | `{_cell(format_default(field))}` | "
                     f"{_cell(field.description or '')} |")
    return lines + [""]


def render() -> str:
    """The whole of ``docs/config_reference.md``."""
    lines = ["# Configuration reference", "",
             "Generated by `python -m scripts.config_reference` from the pydantic models; do not edit by hand.",
             "Every model refuses unknown keys (`training.config_base.StrictModel`). A key path `a.b` is key `b`",
             "of section `a` in YAML, or `a.b=value` as a command-line override where the command takes them.",
             ""]
    lines += [f"- [{c.title}](#{_anchor(c.title)})" for c in CONFIGS] + [""]
    for config in CONFIGS:
        lines += table(config)
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.config_reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m scripts.config_reference", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
