"""A local Hugging Face teacher reads safetensors only; pickle-format weights need ``teacher.allow_pickle``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hf_helpers import build_tiny_hf_llama
from pydantic import ValidationError
from safetensors.torch import load_file

from training.teachers.config import TeacherSection
from training.teachers.factory import build_teacher
from training.teachers.hf import HFTeacher, PickleWeightsRefused, weight_format
from training.user_errors import is_user_error


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-teacher")
    safe = build_tiny_hf_llama(root / "safe", hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32,
                               vocab_size=300)
    pickled = shutil.copytree(safe, root / "pickled")
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    return {"safe": safe, "pickled": pickled}


def test_pickle_only_weights_are_refused_with_what_to_do(dirs: dict[str, Path]) -> None:
    assert weight_format(dirs["pickled"]) == "pickle" and weight_format(dirs["safe"]) == "safetensors"
    with pytest.raises(PickleWeightsRefused) as caught:
        build_teacher(TeacherSection(kind="hf", path=str(dirs["pickled"])))
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "teacher.allow_pickle: true" in message
    assert is_user_error(caught.value)


def test_allow_pickle_loads_the_same_model(dirs: dict[str, Path]) -> None:
    ids = torch.tensor([[1, 5, 7, 9]])
    safe = build_teacher(TeacherSection(kind="hf", path=str(dirs["safe"])))
    pickled = build_teacher(TeacherSection(kind="hf", path=str(dirs["pickled"]), allow_pickle=True))
    assert isinstance(pickled, HFTeacher)
    torch.testing.assert_close(pickled.logits(ids), safe.logits(ids))


def test_allow_pickle_is_an_hf_field_kept_out_of_default_fingerprints() -> None:
    assert "allow_pickle" not in TeacherSection(kind="hf", path="h").model_dump()
    assert TeacherSection(kind="hf", path="h", allow_pickle=True).model_dump()["allow_pickle"] is True
    with pytest.raises(ValidationError, match="allow_pickle"):
        TeacherSection(kind="checkpoint", path="c", allow_pickle=True)
