"""Builds the teacher a ``teacher`` config section names (``kind``: checkpoint, hf, http or cache).

Sources are imported on use (the Hugging Face one pulls in ``transformers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from training.teachers.base import Teacher
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.user_errors import UserError

if TYPE_CHECKING:
    from training.teachers.config import TeacherSection


class TeacherPathError(UserError):
    """A teacher section names a directory that does not exist."""


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_teacher(section: TeacherSection) -> Teacher:
    """The teacher a validated ``teacher`` config section names (``kind``: checkpoint, hf, http or cache).

    Raises:
        TeacherPathError: when ``path`` (checkpoint, hf, cache) is not a directory.
    """
    if section.kind in ("checkpoint", "hf", "cache") and not Path(str(section.path)).is_dir():
        raise TeacherPathError(f"teacher {section.kind} directory {section.path} does not exist; fix teacher.path "
                               "(or --teacher) to name the teacher's directory")
    if section.kind == "checkpoint":
        assert section.path is not None
        return CheckpointTeacher(section.path, dtype=_DTYPES[section.dtype])
    if section.kind == "hf":
        from training.teachers.hf import HFTeacher

        assert section.path is not None
        return HFTeacher(section.path, dtype=_DTYPES[section.dtype],  # type: ignore[return-value]
                         allow_pickle=section.allow_pickle)
    if section.kind == "http":
        from training.teachers.http_teacher import HttpTeacher

        return HttpTeacher.from_section(section)  # type: ignore[return-value]
    if section.kind == "cache":
        from training.teachers.cache_teacher import CacheTeacher

        assert section.path is not None
        return CacheTeacher(section.path, temperature=section.temperature)  # type: ignore[return-value]
    raise ValueError(f"unknown teacher kind {section.kind!r}")
