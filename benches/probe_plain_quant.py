"""Plain (no QAT) weight quantization of a trained student: int8 / int4, per channel / per tensor.

    python benches/probe_plain_quant.py STUDENT_DIR TOKENIZER_DIR

Accuracy on the 200 held-out arithmetic prompts that ``make reasoning`` scores (data seed 0).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from training.data.toy_data import task_examples
from training.model import Student
from training.reasoning_pipeline import evaluate_text_student
from training.tokenizer import DistilleryTokenizer


def fake_quantize_weights(model: Student, qmax: int, per_tensor: bool) -> Student:
    """A copy of ``model`` whose linear weights are ``round(w / s) * s`` clamped to ``[-qmax, qmax]``, with
    ``s = max|w| / qmax`` per output row or per tensor."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for module in out.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                peak = w.abs().amax() if per_tensor else w.abs().amax(dim=1, keepdim=True)
                scale = (peak / qmax).clamp_min(1e-10)
                w.copy_(torch.clamp(torch.round(w / scale), -qmax, qmax) * scale)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path, help="trained student artifact directory")
    parser.add_argument("tokenizer", type=Path, help="its tokenizer directory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    student = Student.from_pretrained(str(args.student)).eval()
    tokenizer = DistilleryTokenizer.load(args.tokenizer)
    test = task_examples("arithmetic", 264, 1, heldout=True)[64:]
    print("fp32", evaluate_text_student(student, tokenizer, test, 48, 100)["accuracy"], flush=True)
    for label, qmax, per_tensor in (("int8 per-channel", 127, False), ("int8 per-tensor", 127, True),
                                    ("int4 per-channel", 7, False), ("int4 per-tensor", 7, True)):
        model = fake_quantize_weights(student, qmax, per_tensor)
        print(label, evaluate_text_student(model, tokenizer, test, 48, 100)["accuracy"], flush=True)


if __name__ == "__main__":
    main()
