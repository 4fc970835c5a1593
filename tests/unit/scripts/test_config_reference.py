"""Every field of every documented config model has a description, every model is strict, and
docs/config_reference.md is what ``python -m scripts.config_reference`` writes from the models."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import config_reference
from scripts.config_reference import CONFIGS, OUTPUT, render, walk
from training.config_base import StrictModel


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.target)
def test_every_field_has_a_description(config: config_reference.ConfigDoc) -> None:
    missing = [path for path, field, _ in walk(config.model()) if not (field.description or "").strip()]
    assert not missing, f"{config.target}: fields without a description: {missing}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.target)
def test_every_model_and_section_is_strict(config: config_reference.ConfigDoc) -> None:
    models = {config.model(), *(owner for _, _, owner in walk(config.model()))}
    loose = sorted(m.__name__ for m in models if not issubclass(m, StrictModel))
    assert not loose, f"{config.target}: not StrictModel subclasses: {loose}"


def test_the_reference_is_up_to_date() -> None:
    assert OUTPUT.is_file(), "docs/config_reference.md is missing: run python -m scripts.config_reference"
    assert OUTPUT.read_text(encoding="utf-8") == render(), \
        "docs/config_reference.md is out of date: run python -m scripts.config_reference"


def test_the_reference_lists_every_key() -> None:
    text = render()
    for config in CONFIGS:
        assert f"## {config.title}" in text
    assert "| `data.max_length` |" in text and "| `teacher.kind` |" in text
    assert "| `process.weights_from` |" in text  # process: only what it adds to the KD config ...
    process = text.split("## Process-supervised distillation")[1].split("\n## ")[0]
    assert "| `optim.lr` |" not in process  # ... not the inherited keys


def test_a_field_without_description_fails_and_check_mode_reports_staleness(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare(StrictModel):
        size: int = 3

    monkeypatch.setattr(config_reference, "load", lambda target: Bare)
    doc = config_reference.ConfigDoc("Bare", "x:Bare", "nothing")
    assert [path for path, field, _ in walk(doc.model()) if not field.description] == ["size"]
    monkeypatch.setattr(config_reference, "CONFIGS", (doc,))
    out = tmp_path / "ref.md"
    assert config_reference.main(["--out", str(out)]) == 0
    assert config_reference.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text() + "edited\n")
    assert config_reference.main(["--check", "--out", str(out)]) == 1
