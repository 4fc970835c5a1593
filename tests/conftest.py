"""Shared fixtures: tiny models, tokenizers and artifacts built in-process (nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Under pytest-xdist (`make test` runs `-n 2`) each worker process gets one core: one torch thread, and one
# OpenMP/MKL/OpenBLAS thread for this process and the subprocesses tests launch (they inherit os.environ). Two
# workers with two threads each on 2 cores run tiny models several times slower. Set before torch is imported.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from training.model import Student  # noqa: E402
from training.model_config import ModelConfig  # noqa: E402
from training.tokenizer import DistilleryTokenizer  # noqa: E402

torch.set_num_threads(int(os.environ.get("DISTILLERY_TEST_THREADS", "1" if XDIST_WORKER else "2")))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test (tiny models run fastest on one; several contend on a loaded
    machine); modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

TINY_CORPUS = [
    "Q: 7+3*2-4=?\n<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>",
    "Q: 5-1+8=?\n<think><step>5-1=4</step><step>4+8=12</step></think><answer>12</answer>",
    "Set a timer for 5 minutes <tool_call>{\"name\": \"set_timer\", \"arguments\": {\"minutes\": 5}}</tool_call>",
    "Will it rain today? Ask again later. The quick brown fox jumps over the lazy dog.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer() -> DistilleryTokenizer:
    """Byte-level BPE with 320 ids (15 specials + 256 bytes + a few merges)."""
    return DistilleryTokenizer.train(TINY_CORPUS, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer: DistilleryTokenizer) -> ModelConfig:
    """2 layers, hidden 32, 4 query heads sharing 2 key/value heads, untied head."""
    return ModelConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def tiny_student(tiny_config: ModelConfig) -> Student:
    torch.manual_seed(0)
    return Student(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_student: Student,
                  tiny_tokenizer: DistilleryTokenizer) -> Path:
    """A complete student artifact directory (config, safetensors, tokenizer, card, manifest)."""
    out = tmp_path_factory.mktemp("artifact") / "student"
    tiny_student.save_pretrained(out, tokenizer=tiny_tokenizer, metrics={"accuracy": 0.5},
                                 card={"data": "tiny corpus", "teacher": "none"})
    return out
