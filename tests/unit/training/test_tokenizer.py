"""Byte-level BPE tokenizer: special-token contract, lossless round trip, persistence, HF interop."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from training.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    DistilleryTokenizer,
    TokenizerMismatchError,
    check_tokenizers_match,
)

CORPUS = [
    "Q: 12+7*3=?\n<think><step>7*3=21</step><step>12+21=33</step></think><answer>33</answer>",
    "Le café est très bon. Über naïve façade — 東京は晴れ 🌧️ → ☀️ 👩‍👩‍👧 e\u0301",
    'Turn on the lights <tool_call>{"name": "lights", "arguments": {"on": true}}</tool_call>',
    "The quick brown fox jumps over the lazy dog, then the dog sleeps.",
] * 25
OTHER_CORPUS = ["completely different text about gardening, tomatoes and soil moisture levels"] * 40

SAMPLES = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "Q: 3+4=?\n<think><step>3+4=7</step></think><answer>7</answer>",
    "emoji 😀👍🏽 flags 🇫🇷 zwj 👩‍💻 combining e\u0301 a\u0308\u0323",
    "CJK 漢字かなカナ 한국어, Arabic مرحبا, Devanagari नमस्ते",
    "\x00 control \x07 chars \u200b zero-width \ufeff bom",
]


@pytest.fixture(scope="module")
def tok() -> DistilleryTokenizer:
    """Trained once for this module on a corpus with multi-byte text (so merges span UTF-8 bytes)."""
    return DistilleryTokenizer.train(CORPUS, vocab_size=400)


def test_special_tokens_have_the_documented_fixed_ids(tok: DistilleryTokenizer) -> None:
    """<pad>=0, <bos>=1, <eos>=2, <unk>=3, then the reasoning/tool tokens at 4..14, for any corpus."""
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    expected = [
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
        "<think>",
        "</think>",
        "<step>",
        "</step>",
        "<answer>",
        "</answer>",
        "<bot>",
        "<eot>",
        "<latent>",
        "<tool_call>",
        "</tool_call>",
    ]
    assert list(SPECIAL_TOKENS) == expected
    other = DistilleryTokenizer.train(OTHER_CORPUS, vocab_size=300)
    for i, token in enumerate(expected):
        assert tok.token_id(token) == i
        assert other.token_id(token) == i
        assert tok.decode([i]) == token


def test_bytes_follow_the_specials_and_vocab_size_is_respected(tok: DistilleryTokenizer) -> None:
    """Every single byte is encodable without <unk>; the vocabulary has exactly the requested size."""
    assert tok.vocab_size == 400
    ids = tok.encode(bytes(range(128)).decode("ascii") + "é€😀")
    assert UNK_ID not in ids
    assert all(0 <= i < 400 for i in ids)


def test_token_id_of_unknown_token_raises(tok: DistilleryTokenizer) -> None:
    """token_id of a string that is not one token raises KeyError."""
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tok.token_id("definitely not a single token")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_decode_encode_round_trip_arbitrary_text(tok: DistilleryTokenizer, text: str) -> None:
    """decode(encode(s)) == s for any unicode string."""
    assert tok.decode(tok.encode(text)) == text


PIECES = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "😀",
            "👍🏽",
            "👩‍👩‍👧",
            "🇯🇵",
            "e\u0301",
            "\u0308\u0323",
            "\u200d",
            "\ufe0f",
            " ",
            "\n",
            *SPECIAL_TOKENS,
            "<",
            ">",
            "</",
            "<think",
            "think>",
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=12).map("".join))
def test_decode_encode_round_trip_emoji_combining_and_specials(tok: DistilleryTokenizer, text: str) -> None:
    """Round trip holds for emoji sequences, combining marks and special-token strings mixed into text."""
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_on_fixed_samples(tok: DistilleryTokenizer, text: str) -> None:
    """Hand-picked hard cases round-trip exactly; bos/eos are added only on request."""
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text, add_bos=True, add_eos=True) == [BOS_ID, *ids, EOS_ID]


def test_special_token_strings_in_text_encode_to_their_ids(tok: DistilleryTokenizer) -> None:
    """Special-token strings inside text become their single fixed ids, even glued to other characters."""
    ids = tok.encode("a<think>b</think><answer>42</answer>x<eos>")
    for token in ("<think>", "</think>", "<answer>", "</answer>", "<eos>"):
        assert ids.count(tok.token_id(token)) == 1
    assert ids[-1] == EOS_ID
    assert tok.encode("<tool_call>") == [13]
    assert tok.decode(ids, skip_special_tokens=True) == "ab42x"
    # a partial special token is ordinary text
    assert 4 not in tok.encode("<think")


def test_encode_batch_equals_encode(tok: DistilleryTokenizer) -> None:
    """encode_batch gives the same ids as encoding one by one."""
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]


def test_save_load_round_trip(tok: DistilleryTokenizer, tmp_path: Path) -> None:
    """A saved and reloaded tokenizer gives identical ids, vocabulary, fingerprint and max length."""
    written = tok.save(tmp_path)
    assert sorted(written) == ["tokenizer.json", "tokenizer_config.json"]
    assert all((tmp_path / name).is_file() for name in written)
    loaded = DistilleryTokenizer.load(tmp_path)
    assert loaded.fingerprint() == tok.fingerprint()
    assert loaded.vocab() == tok.vocab()
    assert loaded.model_max_length == tok.model_max_length
    for text in SAMPLES:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


def test_model_max_length_is_persisted(tmp_path: Path) -> None:
    """model_max_length survives save/load via tokenizer_config.json."""
    small = DistilleryTokenizer.train(CORPUS[:4], vocab_size=300, model_max_length=77)
    small.save(tmp_path)
    assert DistilleryTokenizer.load(tmp_path).model_max_length == 77


def test_load_without_tokenizer_json_raises(tmp_path: Path) -> None:
    """Loading a directory without tokenizer.json raises FileNotFoundError naming the file."""
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        DistilleryTokenizer.load(tmp_path)


def test_hf_pretrained_tokenizer_fast_loads_with_identical_ids(
    tok: DistilleryTokenizer, tmp_path: Path
) -> None:
    """PreTrainedTokenizerFast.from_pretrained(dir) encodes/decodes identically, same special ids."""
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    assert hf.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert hf.padding_side == "left"
    assert len(hf) == tok.vocab_size
    for text in SAMPLES:
        ids = tok.encode(text)
        assert hf(text)["input_ids"] == ids, "no bos/eos added by default"
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == tok.decode(ids) == text
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_contract_violation_is_refused() -> None:
    """Wrapping a tokenizer whose special tokens sit at other ids raises TokenizerMismatchError."""
    from tokenizers import models, trainers

    raw = Tokenizer(models.BPE())
    raw.train_from_iterator(
        ["abc"], trainers.BpeTrainer(special_tokens=["<bos>", "<pad>"], show_progress=False)
    )
    with pytest.raises(TokenizerMismatchError, match="'<pad>' has id 1"):
        DistilleryTokenizer(raw)


def test_check_tokenizers_match_accepts_identical(tok: DistilleryTokenizer, tmp_path: Path) -> None:
    """The same tokenizer, and a saved-and-reloaded copy, match."""
    check_tokenizers_match(tok, tok)
    tok.save(tmp_path)
    check_tokenizers_match(tok, DistilleryTokenizer.load(tmp_path))


def test_check_tokenizers_match_names_vocab_size_difference() -> None:
    """Different vocab sizes on the same corpus raise, naming both sizes and the extra tokens."""
    big = DistilleryTokenizer.train(CORPUS, vocab_size=400)
    small = DistilleryTokenizer.train(CORPUS, vocab_size=350)
    with pytest.raises(
        TokenizerMismatchError, match=r"vocab size 400 \(teacher\) vs 350 \(student\)"
    ) as info:
        check_tokenizers_match(big, small)
    assert "tokens only in the teacher" in str(info.value)


def test_check_tokenizers_match_names_vocabulary_difference() -> None:
    """Same size, different corpus: raises naming tokens present in only one of them."""
    mine = DistilleryTokenizer.train(CORPUS, vocab_size=300)
    other = DistilleryTokenizer.train(OTHER_CORPUS, vocab_size=300)
    assert other.vocab_size == mine.vocab_size == 300
    with pytest.raises(TokenizerMismatchError) as info:
        check_tokenizers_match(mine, other)
    message = str(info.value)
    assert "vocab size" not in message
    assert "only in the teacher" in message and "only in the student" in message


def test_check_tokenizers_match_sees_added_tokens(tok: DistilleryTokenizer) -> None:
    """An extra added token changes ids (and the fingerprint), so the tokenizers do not match."""
    extended = DistilleryTokenizer(Tokenizer.from_str(tok.backend.to_str()))
    extended.backend.add_tokens(["zzqxj"])
    assert extended.encode("zzqxj") != tok.encode("zzqxj")
    assert extended.fingerprint() != tok.fingerprint()
    with pytest.raises(TokenizerMismatchError, match="zzqxj"):
        check_tokenizers_match(tok, extended)


def test_too_small_vocab_raises() -> None:
    """A vocabulary smaller than 256 bytes + 15 specials is refused; exactly 271 is accepted."""
    with pytest.raises(ValueError, match="too small"):
        DistilleryTokenizer.train(CORPUS, vocab_size=270)
    assert DistilleryTokenizer.train(CORPUS[:4], vocab_size=271).vocab_size == 271


def test_train_from_files(tmp_path: Path, tok: DistilleryTokenizer) -> None:
    """Training from text files equals training on the same lines in memory."""
    path = tmp_path / "corpus.txt"
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in CORPUS), encoding="utf-8")
    from_files = DistilleryTokenizer.train_from_files([path], vocab_size=400)
    in_memory = DistilleryTokenizer.train([line.replace("\n", " ") + "\n" for line in CORPUS], vocab_size=400)
    assert from_files.fingerprint() == in_memory.fingerprint()
