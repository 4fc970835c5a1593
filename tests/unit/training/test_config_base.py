"""The shared strict config base and YAML loader (training.config_base)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from training.config_base import (
    ConfigFileError,
    FiniteStrictModel,
    FrozenStrictModel,
    StrictModel,
    load_yaml_config,
    read_yaml_mapping,
)
from training.user_errors import is_user_error


class Inner(StrictModel):
    size: int = Field(2, gt=0, description="a size")


class Outer(StrictModel):
    name: str = Field(description="a name")
    rate: float = Field(1.0, description="a rate")
    inner: Inner = Field(Inner(), description="a section")


class Finite(FiniteStrictModel):
    rate: float = Field(1.0, description="a rate")


class Frozen(FrozenStrictModel):
    rate: float = Field(1.0, description="a rate")


def test_the_variants_add_one_rule_each() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Outer(name="x", typo=1)  # type: ignore[call-arg]
    assert math.isinf(Outer(name="x", rate=math.inf).rate)  # the plain base keeps pydantic's float rules
    with pytest.raises(ValidationError, match="finite"):
        Finite(rate=math.inf)
    with pytest.raises(ValidationError, match="frozen"):
        Frozen().rate = 2.0  # type: ignore[misc]
    config = Finite()
    config.rate = 3.0  # not frozen
    assert issubclass(Finite, StrictModel) and issubclass(Frozen, StrictModel)


def test_load_yaml_config_applies_overrides_and_names_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner: {size: 3}\n")
    config = load_yaml_config(Outer, path, ["inner.size=5", "rate=0.5"])
    assert (config.name, config.rate, config.inner.size) == ("run", 0.5, 5)
    path.write_text("name: run\ninner: {size: 0, colour: red}\n")
    with pytest.raises(ConfigFileError) as caught:
        load_yaml_config(Outer, path)
    message = str(caught.value)
    assert str(path) in message and "inner.size" in message and "inner.colour" in message
    assert is_user_error(caught.value)  # one line, exit 2 at a command's edge


@pytest.mark.parametrize(("text", "reason"), [
    (None, "No such file or directory"),
    ("a: [", "cannot read config"),
    ("- 1\n- 2\n", "must be a mapping (key: value) at the top level, got list"),
])
def test_read_yaml_mapping_refuses_what_is_not_a_mapping(tmp_path: Path, text: str | None, reason: str) -> None:
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigFileError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_yaml_mapping(path)
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}


def test_read_yaml_mapping_names_the_file_kind_and_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"cannot read the pipeline config .*missing.yaml: .*; pass --config"):
        read_yaml_mapping(tmp_path / "missing.yaml", what="the pipeline config", hint="; pass --config FILE")
