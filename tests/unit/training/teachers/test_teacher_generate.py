"""Sequence-level KD: teacher completions written as text examples, usable with any student tokenizer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from training.data import encode_example, read_examples
from training.model import Student
from training.model_config import ModelConfig
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.generate import completed_ids, generate_completions, main, read_prompts
from training.teachers.local import GenerationParams, generate_ids
from training.tokenizer import DistilleryTokenizer


@pytest.fixture(scope="module")
def teacher(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> CheckpointTeacher:
    torch.manual_seed(9)
    out = tmp_path_factory.mktemp("gen") / "teacher"
    Student(dataclasses.replace(tiny_config, initializer_range=0.2)).save_pretrained(
        out, tokenizer=tiny_tokenizer
    )
    return CheckpointTeacher(out)


def _prompts(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": f"Q: {i}+{i}=?", "task": "arithmetic"}) + "\n"
            for i in range(n)
        )
    )
    return path


class CountingText:
    def __init__(self, inner: CheckpointTeacher) -> None:
        from training.teachers.generate import LocalTextTeacher

        self.inner = LocalTextTeacher(inner)
        self.tokenizer = inner.tokenizer
        self.prompts: list[str] = []

    def generate_texts(self, prompts, params):  # type: ignore[no-untyped-def]
        self.prompts += list(prompts)
        return self.inner.generate_texts(prompts, params)


def test_completions_are_teacher_greedy_text_and_train_with_another_tokenizer(
    tmp_path: Path, teacher: CheckpointTeacher
) -> None:
    student_tok = DistilleryTokenizer.train(
        ["Q: 1+1=? <answer>2</answer> some other student corpus"] * 30, vocab_size=290
    )
    out = tmp_path / "completions.jsonl"
    params = GenerationParams(max_new_tokens=10)
    report = generate_completions(
        teacher,
        _prompts(tmp_path / "p.jsonl", 5),
        out,
        params,
        batch_size=2,
        teacher_description="checkpoint t",
        student_tokenizer=student_tok,
        progress=False,
    )
    assert (report.written, report.skipped, report.tokenizers_match) == (5, 0, False)
    assert "vocab size" in (report.tokenizer_differences or "")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    tok = teacher.tokenizer
    for i, record in enumerate(records):
        assert (
            record["id"] == f"p{i}" and record["task"] == "arithmetic" and record["teacher"] == "checkpoint t"
        )
        new, _ = generate_ids(teacher, [tok.encode(record["prompt"], add_bos=True)], params)[0]
        assert record["completion"] == tok.decode(new)
    # the trainer's data path reads the file and the student tokenizer encodes it
    examples = [ex for _, ex in read_examples(out)]
    encoded = [encode_example(ex, student_tok, 256, False) for ex in examples]
    assert all(
        student_tok.decode(e.input_ids[1:-1]) == ex.prompt + ex.completion
        for e, ex in zip(encoded, examples, strict=True)
    )
    assert report.student_tokens == sum(len(student_tok.encode(ex.completion)) for ex in examples)


def test_resume_skips_done_prompts_and_repairs_a_torn_line(
    tmp_path: Path, teacher: CheckpointTeacher
) -> None:
    prompts = _prompts(tmp_path / "p.jsonl", 6)
    out = tmp_path / "out.jsonl"
    first = CountingText(teacher)
    generate_completions(
        first, prompts, out, GenerationParams(max_new_tokens=4), batch_size=4, progress=False
    )
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:10])  # crash in the middle of line 4
    assert completed_ids(out) == {"p0", "p1", "p2"}
    second = CountingText(teacher)
    report = generate_completions(second, prompts, out, GenerationParams(max_new_tokens=4), progress=False)
    assert second.prompts == ["Q: 3+3=?", "Q: 4+4=?", "Q: 5+5=?"]
    assert report.skipped == 3 and report.written == 3
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"p{i}" for i in range(6)]


def test_bad_prompt_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"prompt": "y"}\n')
    with pytest.raises(ValueError, match="p.jsonl:2: .*'id'"):
        read_prompts(path)
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(ValueError, match="duplicate id"):
        read_prompts(path)


def test_cli_writes_completions(
    tmp_path: Path, teacher: CheckpointTeacher, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "o.jsonl"
    code = main(
        [
            "--teacher",
            f"checkpoint:{teacher.directory}",
            "--data",
            str(_prompts(tmp_path / "p.jsonl", 2)),
            "--out",
            str(out),
            "--max-new-tokens",
            "3",
            "--no-progress",
            "--threads",
            "1",
            "--student-tokenizer",
            str(teacher.directory),
        ]
    )
    assert code == 0 and len(out.read_text().splitlines()) == 2
    assert "wrote 2 completions" in capsys.readouterr().out


def test_cache_cannot_generate() -> None:
    from training.teachers.generate import text_teacher

    class Sparse:
        tokenizer = None

    with pytest.raises(TypeError, match="cannot generate text"):
        text_teacher(Sparse())
