"""A foreign Hugging Face LLM through every command, small: a tiny random Llama with its own tokenizer
(special tokens and ChatML template, not Distillery's fixed ids) written as GGUF -> ``import_gguf`` ->
KD on chat records -> student artifact (loads in transformers, same ids as the teacher's tokenizer) ->
ONNX and Core ML, both passing their checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.gguf_helpers import CONVERSATION, TinyLlamaSpec, write_tiny_llama_gguf
from training.distill_kd import load_config
from training.kd.trainer import KDTrainer
from training.model import Student
from training.tokenizer import DistilleryTokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Set a timer for five minutes."},
     {"role": "assistant", "content": "Sure: a timer for 5 minutes is running."}],
    [{"role": "user", "content": "Q: 7+3*2-4=?"}, {"role": "assistant", "content": "3*2=6, 7+6=13, 13-4=9."},
     {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from training.import_gguf import main as import_main

    root = tmp_path_factory.mktemp("hf_llm")
    gguf_path = write_tiny_llama_gguf(root / "tiny.gguf", spec=TinyLlamaSpec(num_hidden_layers=4), quant="Q8_0")
    assert import_main([str(gguf_path), "--out", str(root / "teacher"), "--greedy-steps", "4"]) == 0
    data = root / "chat.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "messages": CHATS[i % len(CHATS)]}) + "\n"
                            for i in range(24)))
    config = root / "kd.yaml"
    config.write_text(json.dumps({
        "out_dir": str(root / "run"), "tokenizer": str(root / "teacher"), "seed": 0,
        "teacher": {"kind": "checkpoint", "path": str(root / "teacher")},
        "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "max_position_embeddings": 128},
        "data": {"train": [str(data)], "val": [str(data)], "max_length": 128, "batch_size": 4},
        "optim": {"max_steps": 8, "warmup_steps": 2},
        "eval": {"every": 8, "max_batches": 2, "generate_examples": 0},
        "checkpoint": {"every": 8}, "tensorboard": False, "progress": False, "num_threads": 1,
    }))
    result = KDTrainer(load_config(config)).train()
    assert result.status == "completed"
    return {"root": root, "gguf": gguf_path, "teacher": root / "teacher", "student": root / "run" / "student"}


def test_teacher_artifact_keeps_the_foreign_tokenizer(pipeline: dict[str, Path]) -> None:
    tok = DistilleryTokenizer.load(pipeline["teacher"])
    assert not tok.is_native and tok.chat_template is not None
    reference = transformers.AutoTokenizer.from_pretrained(str(pipeline["gguf"].parent),
                                                           gguf_file=pipeline["gguf"].name)
    ids = reference.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert tok.encode(tok.apply_chat_template(CONVERSATION, add_generation_prompt=True)) == list(ids["input_ids"])
    assert tok.eos_id == reference.eos_token_id


def test_student_artifact_loads_in_transformers_with_the_teachers_ids(pipeline: dict[str, Path]) -> None:
    student_dir = pipeline["student"]
    teacher_tok = DistilleryTokenizer.load(pipeline["teacher"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(student_dir))
    ids = hf_tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(ids["input_ids"]) == teacher_tok.encode(
        teacher_tok.apply_chat_template(CONVERSATION, add_generation_prompt=True))
    assert hf_tok.pad_token_id == teacher_tok.pad_id and hf_tok.eos_token_id == teacher_tok.eos_id
    batch = torch.tensor([list(ids["input_ids"])])
    hf_model = transformers.LlamaForCausalLM.from_pretrained(str(student_dir)).eval()
    ours = Student.from_pretrained(student_dir).eval()
    with torch.no_grad():
        expected, got = hf_model(batch).logits, ours(batch)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    card = (student_dir / "README.md").read_text()
    assert "teacher" in card.lower()


def test_student_exports_to_onnx_and_core_ml_and_passes_the_checks(pipeline: dict[str, Path]) -> None:
    from conversion.convert_coreml import main as coreml_main
    from conversion.export_onnx import main as onnx_main

    root = pipeline["root"]
    assert onnx_main([str(pipeline["student"]), "--out", str(root / "onnx")]) == 0
    assert coreml_main([str(pipeline["student"]), "--out", str(root / "student.mlpackage"),
                        "--cache-len", "256"]) == 0
    report = json.loads((root / "student.report.json").read_text())
    assert report["passed"] is True
    assert "tokenizer" in json.dumps(report)  # the check prompts were encoded with the student's own tokenizer
