"""The ``teacher`` config section (four kinds), ``--teacher SPEC`` parsing, and ``build_teacher``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.kd.config import KDConfig
from training.teachers.base import VocabularyMismatchError, ensure_same_vocabulary
from training.teachers.cache_builder import CacheSettings, build_topk_cache
from training.teachers.cache_teacher import CacheTeacher
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.config import TeacherSection
from training.teachers.factory import build_teacher
from training.teachers.spec import TeacherSpecError, parse_teacher_spec
from training.tokenizer import DistilleryTokenizer


def test_checkpoint_section_is_unchanged_on_the_wire() -> None:
    """An existing ``{kind: checkpoint, path}`` section dumps (so fingerprints / locks) exactly as before."""
    section = TeacherSection.model_validate({"path": "teachers/t"})
    assert section.kind == "checkpoint"
    assert section.model_dump(mode="json") == {"kind": "checkpoint", "path": "teachers/t"}
    cfg = KDConfig.model_validate(
        {
            "out_dir": "o",
            "tokenizer": "t",
            "teacher": {"kind": "checkpoint", "path": "p"},
            "data": {"train": ["a.jsonl"]},
        }
    )
    assert cfg.model_dump(mode="json")["teacher"] == {"kind": "checkpoint", "path": "p"}
    assert KDConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_each_kind_validates_its_fields() -> None:
    http = TeacherSection(kind="http", url="http://127.0.0.1:8000/v1", model="m", tokenizer="tok", top_k=32)
    assert http.model_dump(mode="json") == {
        "kind": "http",
        "url": "http://127.0.0.1:8000/v1",
        "model": "m",
        "tokenizer": "tok",
        "top_k": 32,
    }
    assert TeacherSection.model_validate(http.model_dump()) == http
    assert "http://127.0.0.1:8000/v1" in http.describe() and "m" in http.describe()
    assert TeacherSection(kind="cache", path="c", temperature=2.0).temperature == 2.0
    assert TeacherSection(kind="hf", path="h", dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "http", "url": "http://x/v1"}, "needs \\['model', 'tokenizer'\\]"),
        ({"kind": "cache"}, "needs \\['path'\\]"),
        ({"kind": "checkpoint", "path": "p", "top_k": 5}, "does not use \\['top_k'\\]"),
        ({"kind": "cache", "path": "p", "url": "http://x"}, "does not use \\['url'\\]"),
        ({"kind": "checkpoint", "path": "p", "colour": "red"}, "colour"),
        ({"kind": "grpc", "path": "p"}, "kind"),
        ({"kind": "http", "url": "u", "model": "m", "tokenizer": "t", "top_k": 0}, "top_k"),
    ],
)
def test_invalid_sections_name_the_problem(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TeacherSection.model_validate(data)


def test_spec_forms(tmp_path: Path, tiny_artifact: Path) -> None:
    assert parse_teacher_spec(f"checkpoint:{tiny_artifact}").path == str(tiny_artifact)
    assert parse_teacher_spec(str(tiny_artifact)).kind == "checkpoint"
    http = parse_teacher_spec("http://127.0.0.1:9/v1", ["model=tiny", "tokenizer=/tok", "top_k=32"])
    assert (http.kind, http.url, http.model, http.top_k) == ("http", "http://127.0.0.1:9/v1", "tiny", 32)
    assert (
        parse_teacher_spec("http:http://127.0.0.1:9/v1", ["model=m", "tokenizer=t"]).url
        == "http://127.0.0.1:9/v1"
    )
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    assert parse_teacher_spec(str(hf_dir)).kind == "hf"
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("kind: cache\npath: somewhere\n")
    assert parse_teacher_spec(str(yaml_file)).model_dump(mode="json") == {
        "kind": "cache",
        "path": "somewhere",
    }


def test_bad_specs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TeacherSpecError, match="expected KIND:PATH"):
        parse_teacher_spec(str(tmp_path / "nothing"))
    with pytest.raises(TeacherSpecError, match="neither"):
        parse_teacher_spec(str(tmp_path))
    with pytest.raises(TeacherSpecError, match="key=value"):
        parse_teacher_spec("cache:x", ["oops"])
    with pytest.raises(TeacherSpecError, match="does not use"):
        parse_teacher_spec("cache:x", ["top_k=3"])


def test_build_teacher_checkpoint_and_cache(tmp_path: Path, tiny_artifact: Path) -> None:
    teacher = build_teacher(TeacherSection(path=str(tiny_artifact)))
    assert isinstance(teacher, CheckpointTeacher)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Q: 1+1=?", "completion": "<answer>2</answer>"}) + "\n")
    build_topk_cache(
        teacher, [data], tmp_path / "cache", CacheSettings(k=8), teacher_description={}, progress=False
    )
    cache = build_teacher(TeacherSection(kind="cache", path=str(tmp_path / "cache")))
    assert isinstance(cache, CacheTeacher)
    assert (
        cache.vocab_size == teacher.vocab_size
        and cache.tokenizer.fingerprint() == teacher.tokenizer.fingerprint()
    )
    ensure_same_vocabulary(cache, teacher.tokenizer, teacher.vocab_size)  # type: ignore[arg-type]


def test_teacher_with_another_tokenizer_is_refused_naming_differences(tiny_artifact: Path) -> None:
    other = DistilleryTokenizer.train(["a totally different corpus of words"] * 40, vocab_size=300)
    teacher = build_teacher(TeacherSection(path=str(tiny_artifact)))
    with pytest.raises(VocabularyMismatchError) as info:
        ensure_same_vocabulary(teacher, other, teacher.vocab_size)
    message = str(info.value)
    assert f"vocab size 320 (teacher) vs {other.vocab_size} (student)" in message
    assert "only in the teacher" in message and "sequence-level KD" in message
