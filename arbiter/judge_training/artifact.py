"""Judge artifacts: a student artifact (backbone) + head tensors + ``judge_config.json``.

The backbone is written by :func:`training.artifact.save_student`, so ``Student.from_pretrained``,
``python -m conversion.export_onnx`` and ``python -m conversion.convert_coreml`` read a judge directory as
a student (they ignore the heads). The heads are extra tensors in ``model.safetensors`` under
``judge.`` names (``judge.score_head.weight``, ``judge.clause_head.bias``, ``judge.step_head.weight``,
``judge.tie_log_nu``, ...); ``judge_config.json`` (covered by the manifest) says which heads exist and how
inputs are built. :func:`arbiter.judge_export` exports backbone and heads together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arbiter.judge_training.model import HEAD_PREFIX, JudgeModel
from training.artifact import ArtifactError, extra_tensors, load_student, save_student, verify_manifest
from training.tokenizer import DistilleryTokenizer

JUDGE_CONFIG_FILE = "judge_config.json"
JUDGE_FORMAT = "distillery-judge"


class JudgeSpec(BaseModel):
    """Contents of ``judge_config.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["distillery-judge"] = JUDGE_FORMAT
    format_version: Literal[1] = 1
    clauses: tuple[str, ...] = ()
    step_head: bool = True
    surprise_features: bool = False
    tie_model: Literal["davidson"] = "davidson"
    max_length: int = Field(96, ge=8)
    input_format: str = ("<bos> + prompt + response + <eos>; score and clauses read the last real token; "
                         "response_mask marks the response and <eos>")
    step_token: str = "</step>"
    head_prefix: str = HEAD_PREFIX


def save_judge(model: JudgeModel, directory: str | Path, *, tokenizer: DistilleryTokenizer, max_length: int,
               metrics: dict[str, Any] | None = None, card: dict[str, Any] | None = None) -> Path:
    """Write a verified judge artifact (atomic); returns its path."""
    spec = JudgeSpec(clauses=model.clauses, step_head=model.has_step_head,
                     surprise_features=model.surprise_features, max_length=max_length)
    files = {JUDGE_CONFIG_FILE: (json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()}
    return save_student(model.backbone, directory, tokenizer=tokenizer, metrics=metrics, card=card,
                        extra_tensors=model.head_state_dict(), extra_files=files)


def read_spec(directory: str | Path) -> JudgeSpec:
    """The verified ``judge_config.json`` of a judge artifact."""
    directory = Path(directory)
    manifest = verify_manifest(directory)
    if JUDGE_CONFIG_FILE not in manifest["files"]:
        raise ArtifactError(f"{directory} has no {JUDGE_CONFIG_FILE} in its manifest: not a judge artifact")
    try:
        return JudgeSpec.model_validate_json((directory / JUDGE_CONFIG_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{directory / JUDGE_CONFIG_FILE} is invalid: {exc}") from exc


def load_judge(directory: str | Path) -> tuple[JudgeModel, JudgeSpec, DistilleryTokenizer]:
    """Model (eval mode, CPU), spec and tokenizer of a judge artifact; every file is verified."""
    spec = read_spec(directory)
    backbone = load_student(directory)
    model = JudgeModel(backbone, spec.clauses, spec.step_head, spec.surprise_features)
    try:
        model.load_head_state_dict(extra_tensors(directory, HEAD_PREFIX))
    except ValueError as exc:
        raise ArtifactError(f"{directory}: {exc}") from exc
    return model.eval(), spec, DistilleryTokenizer.load(directory)
