"""python -m training.import_gguf: a tiny random Llama written as GGUF (F32 and Q8_0) imports as a verified
artifact whose logits and tokenizer equal transformers' own GGUF load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from gguf_helpers import CHAT_TEMPLATE, CONVERSATION, TinyLlamaSpec, write_tiny_llama_gguf  # noqa: E402

from training.artifact import ArtifactError, verify_manifest  # noqa: E402
from training.import_gguf import (  # noqa: E402
    GGUFImportError,
    GGUFVerificationError,
    import_gguf,
    main,
)
from training.model import Student  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPTS = ("The quick brown fox", "Q: 7+3*2-4=?")


def _rel(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float((ref.float() - got.float()).abs().max() / ref.float().abs().max())


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _hf_gguf(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf")
    write_tiny_llama_gguf(root / "tiny-f32.gguf")
    write_tiny_llama_gguf(root / "tiny-q8.gguf", quant="Q8_0", spec=TinyLlamaSpec(tie_word_embeddings=True, seed=1))
    return root


@pytest.fixture(scope="module")
def imported(gguf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("artifacts") / "f32"
    metrics = import_gguf(gguf_dir / "tiny-f32.gguf", out, prompts=PROMPTS, greedy_steps=4)
    return out, metrics


def test_f32_import_equals_transformers_gguf_load(imported: tuple[Path, dict], gguf_dir: Path) -> None:
    out, metrics = imported
    ref, tok = _hf_gguf(gguf_dir / "tiny-f32.gguf")
    student = Student.from_pretrained(str(out))
    assert not student.config.tie_word_embeddings
    ids = torch.tensor([_ids(tok.apply_chat_template(CONVERSATION, add_generation_prompt=True))])
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        assert _rel(want, student(ids)) <= 1e-5
        # the artifact contract: transformers reads the artifact directory as the same model
        from transformers import LlamaForCausalLM

        assert _rel(want, LlamaForCausalLM.from_pretrained(str(out)).eval()(input_ids=ids).logits) <= 1e-5
    assert metrics["logits_rel_error"] <= 1e-5 and metrics["greedy_agreement"] == 1.0
    assert metrics["greedy_tokens_compared"] == 4 * 4  # 2 prompts + 2 chat conversations, 4 steps each
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["logits_rel_error"] == metrics["logits_rel_error"] and on_disk["tokenizer_ids_identical"]
    assert "logits_rel_error" in (out / "README.md").read_text()


def test_tokenizer_keeps_special_tokens_and_chat_template(imported: tuple[Path, dict], gguf_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    out, _ = imported
    _, gguf_tok = _hf_gguf(gguf_dir / "tiny-f32.gguf")
    tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE and not (out / "chat_template.jinja").exists()
    want = _ids(gguf_tok.apply_chat_template(CONVERSATION, add_generation_prompt=True))
    assert _ids(tok.apply_chat_template(CONVERSATION, add_generation_prompt=True)) == want
    assert want[0] == tok.convert_tokens_to_ids("<|im_start|>")  # special tokens stay whole
    model_config = json.loads((out / "config.json").read_text())
    assert model_config["model_type"] == "llama" and model_config["architectures"] == ["LlamaForCausalLM"]
    assert (model_config["bos_token_id"], model_config["eos_token_id"], model_config["pad_token_id"]) == (1, 2, 0)


def test_manifest_covers_every_file_and_tampering_is_refused(imported: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    out, _ = imported
    listed = set(verify_manifest(out)["files"])
    on_disk = {p.name for p in out.iterdir() if p.name != "manifest.json"}
    assert listed == on_disk >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                 "generation_config.json", "README.md", "metrics.json"}
    copy = tmp_path / "tampered"
    shutil.copytree(out, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors"):
        Student.from_pretrained(str(copy))


def test_q8_0_tied_and_bfloat16(gguf_dir: Path, tmp_path: Path) -> None:
    path = gguf_dir / "tiny-q8.gguf"
    metrics = import_gguf(path, tmp_path / "bf16", dtype="bfloat16", prompts=PROMPTS[:1], greedy_steps=2)
    tolerance = metrics["logits_rel_error_tolerance"]
    assert metrics["dtype"] == "bfloat16" and 0 < tolerance == 2 * metrics["bf16_floor_rel_error"] < 0.05
    assert metrics["logits_rel_error"] <= tolerance and metrics["logits_rel_error_vs_float32"] < 0.05
    assert metrics["weights_rel_error_fp32_compute"] <= 1e-5 and metrics["weights_greedy_identical_fp32_compute"]
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), framework="pt") as fh:
        names = list(fh.keys())  # noqa: SIM118 - safe_open is not a mapping
        assert {fh.get_tensor(k).dtype for k in names} == {torch.bfloat16}
        assert "lm_head.weight" not in names  # tied, as in Hugging Face
    # the dequantized Q8_0 weights, in float32, are exactly what transformers loads
    ref, tok = _hf_gguf(path)
    student = Student.from_pretrained(str(tmp_path / "bf16"))
    assert student.config.tie_word_embeddings
    ids = torch.tensor([_ids(tok("Hello there, how are you?")["input_ids"])])
    with torch.no_grad():
        assert _rel(ref.to(torch.bfloat16)(input_ids=ids).logits, student.to(torch.bfloat16)(ids)) <= 0.05


def test_non_llama_architecture_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny_llama_gguf(tmp_path / "qwen.gguf", architecture="qwen2")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "general.architecture='qwen2'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_existing_out_is_refused_unless_force(gguf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(gguf_dir / "tiny-f32.gguf"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main([str(gguf_dir / "tiny-q8.gguf"), "--out", str(out), "--force", "--greedy-steps", "1"]) == 0
    assert "imported tiny-q8.gguf" in capsys.readouterr().out
    assert not (out / "keep.txt").exists()
    verify_manifest(out)
    # an empty directory is not "existing output"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GGUFImportError, match="does not exist"):
        import_gguf(tmp_path / "missing.gguf", empty)


def test_failed_verification_writes_nothing(gguf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.import_gguf as mod

    monkeypatch.setattr(mod, "FP32_TOLERANCE", -1.0)
    with pytest.raises(GGUFVerificationError, match="logits relative error"):
        import_gguf(gguf_dir / "tiny-f32.gguf", tmp_path / "out", prompts=PROMPTS[:1], conversations=(),
                    greedy_steps=1)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_not_a_gguf_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("not a model")
    assert main([str(bogus), "--out", str(tmp_path / "out")]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_metadata_reader_fallback_to_gguf_package(gguf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from training.import_gguf import gguf_metadata

    fast = gguf_metadata(gguf_dir / "tiny-q8.gguf")
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.reader", None)  # as in transformers 4.x
    slow = gguf_metadata(gguf_dir / "tiny-q8.gguf")
    assert fast == slow == {"architecture": "llama", "name": "tiny-llama", "file_type": 7, "tensors": 20}
