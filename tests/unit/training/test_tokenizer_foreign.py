"""Any Hugging Face tokenizer is first-class: roles from its config, pad falls back to eos, its chat template
renders as transformers renders it, ids equal transformers' ids, fingerprints tell tokenizers apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hf_helpers import CHATML_TEMPLATE, build_foreign_tokenizer
from training.chat_template import ChatTemplateError
from training.tokenizer import DistilleryTokenizer, TokenizerMismatchError, check_tokenizers_match

transformers = pytest.importorskip("transformers")

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
LLAMA_STYLE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] | trim + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] | trim + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def foreign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_foreign_tokenizer(tmp_path_factory.mktemp("foreign"), vocab_size=600)


def _hf(directory: Path) -> object:
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))


def test_roles_come_from_the_tokenizer_config(foreign_dir: Path) -> None:
    tok = DistilleryTokenizer.load(foreign_dir)
    hf = _hf(foreign_dir)
    assert not tok.is_native
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id)
    assert tok.eos_id == tok.token_id("<|im_end|>") and tok.bos_id == tok.token_id("<|im_start|>")
    assert tok.chat_template == CHATML_TEMPLATE


def test_no_pad_token_falls_back_to_eos_and_is_recorded(foreign_dir: Path, tmp_path: Path) -> None:
    tok = DistilleryTokenizer.load(foreign_dir)
    assert tok.pad_is_eos and tok.pad_id == tok.eos_id
    tok.save(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["pad_token"] == "<|im_end|>" and saved["chat_template"] == CHATML_TEMPLATE
    assert _hf(tmp_path).pad_token_id == tok.eos_id
    again = DistilleryTokenizer.load(tmp_path)
    assert again.pad_id == tok.pad_id and again.fingerprint() == tok.fingerprint()


def test_explicit_pad_token_is_used(tmp_path: Path) -> None:
    tok = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path, vocab_size=400, pad_token="<|endoftext|>"))
    assert not tok.pad_is_eos and tok.pad_id == tok.token_id("<|endoftext|>") != tok.eos_id


@pytest.mark.parametrize("text", ["Hello there!", "The capital of France is Paris.\n\n  x", "ünïcødé ✓ 中文",
                                  "<|im_start|>user\nhi<|im_end|>"])
def test_ids_equal_transformers(foreign_dir: Path, text: str) -> None:
    tok = DistilleryTokenizer.load(foreign_dir)
    assert tok.encode(text) == _hf(foreign_dir)(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_renders_as_transformers(foreign_dir: Path, generation_prompt: bool) -> None:
    tok = DistilleryTokenizer.load(foreign_dir)
    ours = tok.apply_chat_template(CONVERSATION, add_generation_prompt=generation_prompt)
    theirs = _hf(foreign_dir).apply_chat_template(CONVERSATION, tokenize=False,
                                                  add_generation_prompt=generation_prompt)
    assert ours == theirs
    assert ours.endswith("<|im_start|>assistant\n") == generation_prompt


def test_template_variables_and_raise_exception_match_transformers(tmp_path: Path) -> None:
    directory = build_foreign_tokenizer(tmp_path, vocab_size=400, chat_template=LLAMA_STYLE)
    tok = DistilleryTokenizer.load(directory)
    messages = [{"role": "user", "content": "hi "}, {"role": "assistant", "content": " yes"}]
    assert tok.apply_chat_template(messages) == _hf(directory).apply_chat_template(messages, tokenize=False)
    assert tok.apply_chat_template(messages).startswith("<|im_start|>[INST] hi [/INST] yes<|im_end|>")
    with pytest.raises(ChatTemplateError, match="alternate"):
        tok.apply_chat_template([{"role": "assistant", "content": "x"}])


def test_chat_template_file_beside_the_config_is_read(tmp_path: Path) -> None:
    directory = build_foreign_tokenizer(tmp_path, vocab_size=400, chat_template=None)
    assert DistilleryTokenizer.load(directory).chat_template is None
    (directory / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    assert DistilleryTokenizer.load(directory).chat_template == CHATML_TEMPLATE


def test_no_template_is_a_clear_error(tmp_path: Path) -> None:
    tok = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path, vocab_size=400, chat_template=None))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tok.apply_chat_template(CONVERSATION)


def test_bos_policy_follows_post_processor_and_config(tmp_path: Path) -> None:
    plain = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path / "a", vocab_size=400))
    assert not plain.adds_bos and plain.encode("hi", add_bos=True) == plain.encode("hi")
    with_bos = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path / "b", vocab_size=400,
                                                                add_bos_processor=True))
    assert with_bos.adds_bos and with_bos.encode("hi", add_bos=True) == [with_bos.bos_id, *with_bos.encode("hi")]
    assert with_bos.encode("hi", add_bos=True) == _hf(tmp_path / "b")("hi")["input_ids"]
    config_path = tmp_path / "b" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "add_bos_token": False}))
    assert not DistilleryTokenizer.load(tmp_path / "b").adds_bos


def test_native_tokenizer_keeps_the_fixed_contract(tiny_tokenizer: DistilleryTokenizer, tmp_path: Path) -> None:
    tiny_tokenizer.save(tmp_path)
    loaded = DistilleryTokenizer.load(tmp_path)
    assert loaded.is_native and (loaded.pad_id, loaded.bos_id, loaded.eos_id, loaded.unk_id) == (0, 1, 2, 3)
    assert loaded.encode("1+2", add_bos=True)[0] == 1
    assert loaded.fingerprint() == tiny_tokenizer.fingerprint()


def test_fingerprint_tells_foreign_tokenizers_apart(foreign_dir: Path, tmp_path: Path,
                                                    tiny_tokenizer: DistilleryTokenizer) -> None:
    a = DistilleryTokenizer.load(foreign_dir)
    check_tokenizers_match(a, DistilleryTokenizer.load(foreign_dir))
    b = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path, vocab_size=330))
    assert a.fingerprint() != b.fingerprint()
    with pytest.raises(TokenizerMismatchError, match="vocab size"):
        check_tokenizers_match(a, b)
    with pytest.raises(TokenizerMismatchError):
        check_tokenizers_match(a, tiny_tokenizer)


def test_role_token_missing_from_vocabulary_is_refused(foreign_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json",):
        (tmp_path / name).write_bytes((foreign_dir / name).read_bytes())
    config = json.loads((foreign_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<nope>"}))
    with pytest.raises(TokenizerMismatchError, match="'<nope>' as the pad token"):
        DistilleryTokenizer.load(tmp_path)
    del config["eos_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerMismatchError, match="no eos token"):
        DistilleryTokenizer.load(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(TokenizerMismatchError, match="JSON object"):
        DistilleryTokenizer.load(tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_foreign_round_trip(text: str) -> None:
    tok = _ROUND_TRIP_TOKENIZER
    assert tok.decode(tok.encode(text)) == text


_ROUND_TRIP_TOKENIZER = DistilleryTokenizer.load(
    build_foreign_tokenizer(Path(__import__("tempfile").mkdtemp(prefix="rt-foreign-")), vocab_size=400))


def test_reasoning_features_refuse_a_foreign_tokenizer(foreign_dir: Path) -> None:
    from arbiter.judge_training.encoding import encode_input
    from training.reasoning.latent_data import encode_latent_example

    tok = DistilleryTokenizer.load(foreign_dir)
    with pytest.raises(TokenizerMismatchError, match="latent curriculum needs a Distillery-trained tokenizer"):
        encode_latent_example({"prompt": "1+2", "steps": ["1+2=3"], "answer": "3"}, tok)
    with pytest.raises(TokenizerMismatchError, match="judge"):
        encode_input(tok, "1+2", "3", max_length=32)
