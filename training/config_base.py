"""The strict pydantic base of every config model, and the one YAML config loader.

Every user-facing config model (KD, process, pipelines, judge training, exporters) derives from
:class:`StrictModel`: an unknown or misspelled key is an error that names the key, never silently ignored.
Two variants add one rule each and are still :class:`StrictModel` subclasses:

* :class:`FiniteStrictModel`: also refuses non-finite floats (``.inf``, ``.nan``), which satisfy ``gt=0``
  bounds and would train NaN weights (the KD config);
* :class:`FrozenStrictModel`: also immutable after validation (judge training, loss weights, exporters).

:func:`read_yaml_mapping` and :func:`load_yaml_config` read a YAML file into a model with the same error
messages everywhere: :class:`ConfigFileError` naming the file and every invalid key by its dotted path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from training.user_errors import UserError

__all__ = [
    "ConfigFileError",
    "FiniteStrictModel",
    "FrozenStrictModel",
    "StrictModel",
    "apply_overrides",
    "load_yaml_config",
    "parse_override",
    "read_yaml_mapping",
    "validate_config",
    "validation_problems",
]

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(UserError, ValueError):
    """A config file or override could not be read or validated (a user error: exit 2, one line)."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class FiniteStrictModel(StrictModel):
    """A :class:`StrictModel` that also refuses non-finite floats (``.inf``, ``.nan``) in every float field."""

    # allow_inf_nan=False: ``optim.lr=.inf`` satisfies ``gt=0`` and would train (and checkpoint) NaN weights.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


class FrozenStrictModel(StrictModel):
    """A :class:`StrictModel` whose instances are immutable (and hashable when their fields are)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_problems(exc: ValidationError) -> str:
    """``"a.b: message; c: message"``: every error of ``exc`` with the dotted path of its key."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def read_yaml_mapping(path: str | Path, *, what: str = "config", hint: str = "") -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is ``{}``).

    ``what`` names the file in messages (``"config"``, ``"the pipeline config"``); ``hint`` is appended to
    the message of an unreadable file (e.g. ``"; pass --config FILE"``).

    Raises:
        ConfigFileError: the file cannot be read or parsed, or does not hold a mapping.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigFileError(f"cannot read {what} {path}: {reason}{hint}") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must be a mapping (key: value) at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigFileError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigFileError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sub-dicts) from ``key=value`` strings."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigFileError(f"override {item!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def validate_config(model: type[M], data: dict[str, Any], path: str | Path) -> M:
    """``model.model_validate(data)``; a validation error becomes :class:`ConfigFileError` naming ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(f"invalid config {path}: {validation_problems(exc)}") from exc


def load_yaml_config(model: type[M], path: str | Path, overrides: Sequence[str] | None = None) -> M:
    """Read the YAML mapping at ``path``, apply ``key.path=value`` overrides, validate it as ``model``.

    Raises:
        ConfigFileError: naming the file, and every unknown or invalid key with its dotted path.
    """
    return validate_config(model, apply_overrides(read_yaml_mapping(path), overrides or []), path)
