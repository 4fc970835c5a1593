"""How far a converted Core ML fp16 program is from its fp32 student, next to PyTorch's own fp16.

    .venv/bin/python benches/bench_coreml_fp16.py [STUDENT_DIR PACKAGE.mlpackage] [--data test.jsonl] [-n 48]

Defaults: the `make distill` student and its Core ML package (runs/toy/...); run `make distill` first.

For each of ``n`` held-out sequences (prompt + gold completion, encoded with the artifact's tokenizer,
BOS first) it computes the relative logits error ``max|x - ref| / max|ref|`` against the fp32 student of

* the converted program, run by the numpy MIL reference executor (``conversion.mil_executor``), and
* the same student run by PyTorch in fp16 (``.half()``: fp16 weights and activations; its RMSNorm and
  attention compute internally in fp32),

and reports median / p90 / max of both, and the ratio of their maxima over groups of 4 sequences (the
conversion check uses 4 prompts). Writes benches/results/coreml_fp16.md (appends one section per run).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conversion.mil_executor import ExecutorRunner, rel_error  # noqa: E402
from training.model import Student  # noqa: E402
from training.tokenizer import DistilleryTokenizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "coreml_fp16.md"


def sequences(student_dir: Path, data: Path, count: int, limit: int) -> list[list[int]]:
    """The first ``count`` examples of ``data`` as token ids (BOS + prompt + completion), cut to ``limit``."""
    tokenizer = DistilleryTokenizer.load(student_dir)
    out = []
    with data.open() as handle:
        for line in handle:
            row = json.loads(line)
            out.append(tokenizer.encode(row["prompt"] + row["completion"], add_bos=True)[:limit])
            if len(out) == count:
                break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path, nargs="?", default=Path("runs/toy/student"))
    parser.add_argument("package", type=Path, nargs="?", default=Path("runs/toy/coreml/student.mlpackage"))
    parser.add_argument("--data", type=Path, default=Path("runs/toy/data/test.jsonl"))
    parser.add_argument("-n", type=int, default=48, help="sequences (a multiple of 4)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in (args.student, args.package, args.data) if not p.exists()]
    if missing:
        print(f"SKIPPED: {', '.join(missing)} not found; run `make distill` first (or pass paths)")
        return 0
    torch.set_num_threads(1)
    student = Student.from_pretrained(str(args.student)).float().eval()
    half = copy.deepcopy(student).half().eval()
    runner = ExecutorRunner(args.package, pad_id=student.config.pad_token_id)
    program, torch16 = [], []
    with torch.no_grad():
        for tokens in sequences(args.student, args.data, args.n, runner.max_length):
            ids = torch.tensor([tokens])
            ref = student(ids)[0].numpy()
            program.append(rel_error(runner.prefill(tokens), ref))
            torch16.append(rel_error(half(ids)[0].float().numpy(), ref))
    a, b = np.array(program), np.array(torch16)
    groups = len(a) // 4
    ratio = np.sort(a[: groups * 4].reshape(groups, 4).max(1) / b[: groups * 4].reshape(groups, 4).max(1))

    def row(name: str, x: np.ndarray) -> str:
        return f"| {name} | {np.median(x):.2e} | {np.quantile(x, 0.9):.2e} | {x.max():.2e} | {(x > 3e-3).sum()} |"

    text = "\n".join([
        f"## {args.student} ({dt.date.today()}, {len(a)} sequences from {args.data})",
        "",
        f"Command: `.venv/bin/python benches/bench_coreml_fp16.py {args.student} {args.package} "
        f"--data {args.data} -n {args.n}`",
        "",
        "| relative logits error vs the fp32 student | median | p90 | max | sequences > 3e-3 |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("Core ML fp16 program (MIL executor)", a),
        row("PyTorch fp16 (`.half()`)", b),
        "",
        f"Ratio program / PyTorch fp16 of the max over groups of 4 sequences: {', '.join(f'{r:.2f}' for r in ratio)}",
        "",
    ])
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
