"""Sequence-level KD, the strategy that works across tokenizers: write the teacher's completions as text.

``python -m training.teachers.generate --teacher SPEC --data prompts.jsonl --out completions.jsonl``

Reads JSONL records with ``id`` and ``prompt`` (other fields are kept; ``completion`` is replaced), asks the
teacher for a completion of each prompt as text, and appends one training example per line:
``{"id", "prompt", "completion", ..., "teacher": "<source>"}``. The trainer encodes these with the student's
own tokenizer, so teacher and student tokenizers may differ (token-level KD refuses that). With
``--student-tokenizer`` the tool reports whether the two tokenizers match and checks that the student
tokenizer encodes every completion losslessly.

Sources: a local checkpoint or HF directory (generated in-process) or an HTTP endpoint (``text_endpoint``:
chat or completions). Resumable: ids already in the output are skipped, and a torn last line (a crash in
mid-write) is removed first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from training.data.schema import Example, describe_validation_error
from training.teachers.local import GenerationParams, generate_ids, is_dense_local
from training.teachers.spec import add_teacher_arguments, teacher_from_arguments
from training.tokenizer import check_tokenizers_match
from training.user_errors import user_error_exit


class TextTeacher(Protocol):
    def generate_texts(self, prompts: Sequence[str], params: GenerationParams) -> list[str]: ...


class LocalTextTeacher:
    """Text completions from an in-process dense teacher: ``bos + prompt`` -> continuation up to eos."""

    def __init__(self, teacher: Any) -> None:
        if not is_dense_local(teacher):
            raise TypeError(f"{type(teacher).__name__} cannot generate text")
        self.teacher = teacher

    def generate_texts(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        tok = self.teacher.tokenizer
        encoded = [tok.encode(p, add_bos=True) for p in prompts]
        return [tok.decode(new) for new, _ in generate_ids(self.teacher, encoded, params)]


def text_teacher(teacher: Any) -> TextTeacher:
    """The text interface of a teacher (HTTP teachers have one; local dense ones are wrapped)."""
    if hasattr(teacher, "generate_texts"):
        return teacher  # type: ignore[no-any-return]
    if is_dense_local(teacher):
        return LocalTextTeacher(teacher)
    raise TypeError(
        f"a {type(teacher).__name__} cannot generate text (a top-k cache holds no model): use a "
        "checkpoint, hf or http teacher"
    )


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """JSONL records with a string ``id`` and ``prompt``; errors name the line."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
                raise ValueError(f"{path}:{number}: a prompt record needs a non-empty string 'id'")
            if not isinstance(record.get("prompt"), str):
                raise ValueError(f"{path}:{number}: a prompt record needs a string 'prompt'")
            if record["id"] in seen:
                raise ValueError(f"{path}:{number}: duplicate id {record['id']!r}")
            seen.add(record["id"])
            records.append(record)
    return records


def completed_ids(out: Path) -> set[str]:
    """Ids already written to ``out``; a torn (unterminated) last line is cut off first."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(out, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    done: set[str] = set()
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            done.add(json.loads(line)["id"])
    return done


@dataclass
class GenerateReport:
    """What a run did; student fields are set when a student tokenizer was given."""

    total: int
    written: int
    skipped: int
    tokenizers_match: bool | None = None
    tokenizer_differences: str | None = None
    student_tokens: int | None = None


def generate_completions(
    teacher: Any,
    prompts_path: str | Path,
    out_path: str | Path,
    params: GenerationParams,
    *,
    batch_size: int = 8,
    teacher_description: str = "",
    student_tokenizer: Any | None = None,
    progress: bool = True,
) -> GenerateReport:
    """Append the teacher's completion of every not-yet-done prompt to ``out_path`` (see the module doc)."""
    from training.ops.progress import progress as tqdm

    source = text_teacher(teacher)
    records = read_prompts(Path(prompts_path))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(out)
    todo = [r for r in records if r["id"] not in done]
    report = GenerateReport(total=len(records), written=0, skipped=len(records) - len(todo))
    if student_tokenizer is not None:
        report.student_tokens = 0
        try:
            check_tokenizers_match(teacher.tokenizer, student_tokenizer)
            report.tokenizers_match = True
        except ValueError as exc:
            report.tokenizers_match = False
            report.tokenizer_differences = str(exc)
    with (
        open(out, "a", encoding="utf-8") as fh,
        tqdm(
            total=len(records), initial=report.skipped, unit="ex", desc="teacher text", disable=not progress
        ) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            texts = source.generate_texts([r["prompt"] for r in chunk], params)
            lines = []
            for record, text in zip(chunk, texts, strict=True):
                example = {**record, "completion": text, "teacher": teacher_description}
                try:
                    Example.model_validate(example)
                except ValidationError as exc:
                    raise ValueError(
                        f"example {record['id']!r} would be invalid: {describe_validation_error(exc)}"
                    ) from exc
                if student_tokenizer is not None:
                    ids = student_tokenizer.encode(text)
                    if student_tokenizer.decode(ids) != text:
                        raise ValueError(
                            f"the student tokenizer does not encode the completion of {record['id']!r} "
                            "losslessly"
                        )
                    report.student_tokens = (report.student_tokens or 0) + len(ids)
                lines.append(json.dumps(example, ensure_ascii=False) + "\n")
            fh.write("".join(lines))
            fh.flush()
            report.written += len(chunk)
            bar.update(len(chunk))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.teachers.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_teacher_arguments(parser, sources="checkpoint:DIR, hf:DIR, http://HOST:PORT/v1, or a YAML file",
                          examples="model=NAME tokenizer=DIR")
    parser.add_argument("--data", required=True, help="prompts JSONL (records with id and prompt)")
    parser.add_argument("--out", required=True, help="output JSONL of examples (appended; resumable)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--student-tokenizer", default=None, help="directory of the student's tokenizer.json")
    parser.add_argument("--no-progress", action="store_true")
    return parser


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    from training.teachers.factory import build_teacher
    from training.teachers.teacher_tokenizer import load_teacher_tokenizer

    args = build_parser().parse_args(argv)
    section = teacher_from_arguments(args)
    teacher = build_teacher(section)
    student = load_teacher_tokenizer(args.student_tokenizer) if args.student_tokenizer else None
    params = GenerationParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    report = generate_completions(
        teacher,
        args.data,
        args.out,
        params,
        batch_size=args.batch_size,
        teacher_description=section.describe(),
        student_tokenizer=student,
        progress=not args.no_progress,
    )
    print(
        f"wrote {report.written} completions to {args.out} ({report.skipped} already there, "
        f"{report.total} prompts)"
    )
    if report.tokenizers_match is False:
        print(
            "teacher and student tokenizers differ: these texts are for sequence-level KD (token-level KD "
            f"would be refused): {report.tokenizer_differences}"
        )
    if report.student_tokens is not None:
        print(f"student tokenizer: {report.student_tokens} completion tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
