"""Builders for tiny KD runs used by trainer tests: tokenizer, teacher artifact, data files, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.data.toy_data import write_jsonl
from training.kd.config import KDConfig
from training.model import Student
from training.model_config import ModelConfig
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer


def make_tiny_setup(root: Path, n_train: int = 96, n_val: int = 16, teacher: bool = True) -> dict[str, Path]:
    """Tokenizer, (random-weight) teacher artifact and arithmetic JSONL files under ``root``."""
    task = get_task("arithmetic")
    tok = DistilleryTokenizer.train(task.sample_texts(300, 1), vocab_size=300)
    tok.save(root / "tokenizer")
    write_jsonl(root / "train.jsonl", task.generate(n_train, 0))
    write_jsonl(root / "val.jsonl", task.generate(n_val, 1))
    paths = {"tokenizer": root / "tokenizer", "train": root / "train.jsonl", "val": root / "val.jsonl"}
    if teacher:
        torch.manual_seed(123)
        cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96)
        Student(cfg).save_pretrained(root / "teacher", tokenizer=tok)
        paths["teacher"] = root / "teacher"
    return paths


def tiny_config(paths: dict[str, Path], out_dir: Path, **overrides: Any) -> KDConfig:
    """A KD config of a 2-layer, 32-wide student over the tiny setup; ``overrides`` replace sections."""
    data: dict[str, Any] = {
        "out_dir": str(out_dir),
        "seed": 0,
        "tokenizer": str(paths["tokenizer"]),
        "task": "arithmetic",
        "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96},
        "teacher": {"kind": "checkpoint", "path": str(paths["teacher"])} if "teacher" in paths else None,
        "data": {"train": [str(paths["train"])], "val": [str(paths["val"])], "max_length": 64,
                 "batch_size": 8, "shuffle_buffer": 32},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 8},
        "eval": {"every": 4, "max_batches": 2, "generate_examples": 4, "max_new_tokens": 8},
        "checkpoint": {"every": 4, "keep_last": 2},
        "progress": False,
        "tensorboard": False,
        "num_threads": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return KDConfig.model_validate(data)
