"""Students from teachers: a student initialized from a subset of the teacher's decoder layers.

The student copies the teacher's token embeddings, the chosen decoder layers (in order), the final norm and
the output head (a tied head stays tied), so its width, heads, intermediate size and vocabulary are the
teacher's and only ``num_hidden_layers`` differs. :func:`select_layers` is the (pure) choice of layers,
:func:`student_from_teacher` the copy, :func:`build_student_from_teacher` what the trainer calls for a
``student_init`` config section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.model import Student
from training.model_config import ModelConfig


class StudentInitError(ValueError):
    """A ``student_init`` request does not fit the teacher (layer indices, shape keys)."""


def select_layers(num_teacher_layers: int, layers: list[int] | None = None,
                  every_k: int | None = None) -> list[int]:
    """Indices of the teacher's decoder layers a student keeps, in order.

    Exactly one of ``layers`` and ``every_k``:

    * ``layers``: the given indices, which must be strictly increasing and in ``[0, num_teacher_layers)``.
    * ``every_k``: layers ``0, k, 2k, ...`` **plus the last layer** ``num_teacher_layers - 1`` when the stride
      does not land on it (the last layer writes the states the final norm and head were trained on), e.g.
      ``every_k=5`` of 30 layers -> ``[0, 5, 10, 15, 20, 25, 29]``; ``every_k=1`` keeps every layer.

    Raises:
        StudentInitError: on a bad count, both or neither option, or indices out of range / not increasing.
    """
    if not isinstance(num_teacher_layers, int) or num_teacher_layers < 1:
        raise StudentInitError(f"the teacher must have at least one layer, got {num_teacher_layers!r}")
    if (layers is None) == (every_k is None):
        raise StudentInitError("give exactly one of student_init.layers and student_init.every_k")
    if every_k is not None:
        if not isinstance(every_k, int) or every_k < 1:
            raise StudentInitError(f"student_init.every_k must be a positive integer, got {every_k!r}")
        chosen = list(range(0, num_teacher_layers, every_k))
        if chosen[-1] != num_teacher_layers - 1:
            chosen.append(num_teacher_layers - 1)
        return chosen
    assert layers is not None
    if not layers:
        raise StudentInitError("student_init.layers is empty; name at least one teacher layer")
    bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < num_teacher_layers]
    if bad:
        raise StudentInitError(f"student_init.layers {bad} are not layers of a {num_teacher_layers}-layer teacher "
                               f"(valid: 0..{num_teacher_layers - 1})")
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
        raise StudentInitError(f"student_init.layers must be strictly increasing, got {layers}")
    return list(layers)


def teacher_name(student_name: str, layers: list[int]) -> str:
    """The teacher tensor a student tensor is copied from: ``model.layers.{j}.X`` <- ``model.layers.{layers[j]}.X``;
    every other name (embeddings, final norm, head) is the same in both."""
    prefix = "model.layers."
    if not student_name.startswith(prefix):
        return student_name
    index, rest = student_name[len(prefix):].split(".", 1)
    return f"{prefix}{layers[int(index)]}.{rest}"


def student_from_teacher(teacher: Student, layers: list[int]) -> Student:
    """A new student holding copies of ``teacher``'s embeddings, decoder layers ``layers`` (in that order),
    final norm and head; its config is the teacher's with ``num_hidden_layers = len(layers)``.

    The copies share no storage with the teacher and have its dtype; a tied head stays tied. The student is
    returned in training mode.
    """
    select_layers(teacher.config.num_hidden_layers, layers=list(layers))  # validates the indices
    config = dataclasses.replace(teacher.config, num_hidden_layers=len(layers))
    student = Student(config)
    student = student.to(dtype=teacher.model.embed_tokens.weight.dtype, device=teacher.device)
    source = teacher.state_dict()
    # load_state_dict copies in place, so a tied head (one tensor under two names) stays tied
    student.load_state_dict({name: source[teacher_name(name, list(layers))] for name in student.state_dict()})
    return student.train()


# Student shape keys (the ``student`` config section) and what a student built from a teacher has instead.
_SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings", "rope_theta")


def check_shape_keys(explicit: Mapping[str, Any], derived: ModelConfig) -> None:
    """Refuse ``student`` shape keys a config sets explicitly that contradict the student built from the
    teacher (``derived``); the error names every such key with both values. Keys that agree are accepted."""
    conflicts = {key: (value, getattr(derived, key)) for key, value in explicit.items()
                 if key in _SHAPE_KEYS and getattr(derived, key) != value}
    if conflicts:
        listed = ", ".join(f"student.{k}={mine!r} (from the teacher: {theirs!r})"
                           for k, (mine, theirs) in sorted(conflicts.items()))
        raise StudentInitError(f"student_init takes the student's shape from the teacher; the config sets {listed}. "
                               "Remove these keys from the student section (num_hidden_layers follows from "
                               "student_init.layers / every_k)")


def build_student_from_teacher(path: str | Path, layers: list[int] | None, every_k: int | None,
                               explicit_shape: Mapping[str, Any]) -> tuple[Student, list[int]]:
    """Load the teacher at ``path`` (a Distillery artifact or a Hugging Face Llama directory), choose its layers
    (:func:`select_layers`), check the explicitly set ``student`` keys (:func:`check_shape_keys`) and copy.

    Returns the student (float32, training mode) and the teacher layer indices it holds.
    """
    teacher = Student.from_pretrained(str(path)).float()
    chosen = select_layers(teacher.config.num_hidden_layers, layers=layers, every_k=every_k)
    check_shape_keys(explicit_shape, dataclasses.replace(teacher.config, num_hidden_layers=len(chosen)))
    with torch.no_grad():
        student = student_from_teacher(teacher, chosen)
    return student, chosen


def hidden_layer_map(num_student_layers: int, num_teacher_layers: int,
                     pairs: list[tuple[int, int]] | None = None,
                     init_layers: list[int] | None = None) -> dict[int, int]:
    """``{student_layer: teacher_layer}`` for the hidden-state loss, in decoder-layer numbering (0-based: layer
    ``i``'s output is ``hidden_states[i + 1]``; the embedding output is not matched).

    ``pairs`` (``loss.hidden_layer_map``) when given; else, for a student copied from the teacher, student
    layer ``i`` <-> teacher layer ``init_layers[i]`` (where it came from); else layers spread evenly with the
    last student layer on the last teacher layer (:func:`training.losses.uniform_layer_map`).

    Raises:
        StudentInitError: a pair names a layer the student or the teacher does not have.
    """
    from training.losses import uniform_layer_map

    if pairs is not None:
        mapping = {int(s): int(t) for s, t in pairs}
    elif init_layers is not None:
        mapping = dict(enumerate(init_layers))
    else:
        if num_teacher_layers < num_student_layers:
            raise StudentInitError(f"the student has more layers ({num_student_layers}) than the teacher "
                                   f"({num_teacher_layers}); set loss.hidden_layer_map")
        mapping = uniform_layer_map(num_student_layers, num_teacher_layers)
    bad = {s: t for s, t in mapping.items()
           if not (0 <= s < num_student_layers and 0 <= t < num_teacher_layers)}
    if bad:
        raise StudentInitError(f"loss.hidden_layer_map pairs {sorted(bad.items())} are out of range: the student has "
                               f"{num_student_layers} layers, the teacher {num_teacher_layers}")
    return mapping
