"""Train the bundled teacher: ``python -m training.train_teacher --config configs/teacher.yaml --out assets/teacher``.

Steps: train the shared byte-level BPE tokenizer on task samples, generate training data from the bundled
tasks (held-out prompts excluded, see :mod:`training.data.toy_data`), train a Llama-architecture model with
cross-entropy (the KD trainer without a teacher), and write the artifact with its model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from training.config_base import StrictModel
from training.data.toy_data import task_examples, write_jsonl
from training.kd.config import KDConfig
from training.kd.trainer import KDTrainer
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer
from training.user_errors import user_error_exit


class TeacherRecipe(StrictModel):
    """How the bundled teacher is made (see configs/teacher.yaml)."""

    seed: int = Field(0, description="seed of tokenizer samples, data and training")
    vocab_size: int = Field(384, gt=271,
                            description="vocabulary size of the teacher's byte-level BPE tokenizer (above the 256 "
                                        "bytes and the special tokens)")
    tokenizer_samples: dict[str, int] = Field(description="task -> texts sampled to train the tokenizer")
    train_examples: dict[str, int] = Field(description="task -> training examples generated")
    val_examples: dict[str, int] = Field(description="task -> validation examples generated")
    eval_task: str = Field("arithmetic", description="task whose accuracy is measured at evaluation")
    train: dict[str, Any] = Field(description="KD config sections (student, data, optim, eval, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_teacher", description=__doc__)
    parser.add_argument("--config", default="configs/teacher.yaml")
    parser.add_argument("--out", default="assets/teacher", help="artifact directory to write")
    parser.add_argument("--work-dir", default=None, help="keep data and checkpoints here (default: a temp dir)")
    return parser


def train_teacher(recipe: TeacherRecipe, out: Path, work: Path) -> dict[str, Any]:
    """Build tokenizer and data in ``work``, train, and write the teacher artifact to ``out``."""
    texts: list[str] = []
    for i, (task, n) in enumerate(sorted(recipe.tokenizer_samples.items())):
        texts += get_task(task).sample_texts(n, recipe.seed + 7919 * (i + 1))
    tokenizer = DistilleryTokenizer.train(texts, vocab_size=recipe.vocab_size)
    tokenizer.save(work / "tokenizer")
    train_files, val_files = [], []
    for i, (task, n) in enumerate(sorted(recipe.train_examples.items())):
        path = work / "data" / f"{task}.train.jsonl"
        write_jsonl(path, task_examples(task, n, recipe.seed + 101 * i, heldout=False, unique=task == "arithmetic"))
        train_files.append(str(path))
    for i, (task, n) in enumerate(sorted(recipe.val_examples.items())):
        path = work / "data" / f"{task}.val.jsonl"
        write_jsonl(path, task_examples(task, n, recipe.seed + 5003 + 101 * i, heldout=True))
        val_files.append(str(path))
    cfg_dict = dict(recipe.train)
    cfg_dict.setdefault("data", {})
    cfg_dict["data"] = {**cfg_dict["data"], "train": train_files, "val": val_files}
    cfg_dict.update(out_dir=str(work / "run"), tokenizer=str(work / "tokenizer"), task=recipe.eval_task,
                    seed=recipe.seed, teacher=None)
    cfg_dict.setdefault("card", {})
    cfg_dict["card"] = {
        "name": "distillery-toy-teacher",
        "description": "The bundled toy teacher: trained from scratch on Distillery's generated tasks "
                       f"({', '.join(sorted(recipe.train_examples))}). Reproduce with `make teacher`.",
        "data": {"train_examples": recipe.train_examples, "val_examples": recipe.val_examples,
                 "generator_seed": recipe.seed,
                 "held_out_rule": "prompts with sha256(prompt) mod 10 == 0 are never trained on"},
        "limits": ["Knows only the bundled toy tasks; held-out prompts (sha256 mod 10 == 0) were never "
                   "trained on.", "Accuracy in metrics.json is greedy decoding on held-out arithmetic prompts."],
        **cfg_dict["card"],
    }
    cfg = KDConfig.model_validate(cfg_dict)
    result = KDTrainer(cfg).train()
    if result.student_dir is None:
        raise RuntimeError(f"teacher training did not complete (status {result.status})")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(result.student_dir, out)
    return {"metrics": result.metrics, "wall_seconds": result.wall_seconds, "step": result.step}


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = TeacherRecipe.model_validate(yaml.safe_load(Path(args.config).read_text()))
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        summary = train_teacher(recipe, Path(args.out), work)
    else:
        with tempfile.TemporaryDirectory(prefix="distillery-teacher-") as tmp:
            summary = train_teacher(recipe, Path(args.out), Path(tmp))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
