"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``) with Distillery's fixed special-token contract.

Special tokens sit at fixed ids 0..14 in every Distillery tokenizer (see :data:`SPECIAL_TOKENS`), so a
teacher and a student trained on different corpora still agree on them. Files written are
``tokenizer.json`` and ``tokenizer_config.json``, loadable by
``transformers.PreTrainedTokenizerFast.from_pretrained(dir)`` with identical ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# The contract: token -> id. Never reorder; only append.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",  # 0 padding
    "<bos>",  # 1 beginning of sequence
    "<eos>",  # 2 end of sequence
    "<unk>",  # 3 unknown (byte-level BPE never needs it; kept for HF tooling)
    "<think>",  # 4 reasoning block start
    "</think>",  # 5 reasoning block end
    "<step>",  # 6 reasoning step start
    "</step>",  # 7 reasoning step end
    "<answer>",  # 8 answer start
    "</answer>",  # 9 answer end
    "<bot>",  # 10 begin of latent thought (Coconut)
    "<eot>",  # 11 end of latent thought
    "<latent>",  # 12 latent position placeholder
    "<tool_call>",  # 13 tool call start
    "</tool_call>",  # 14 tool call end
)
SPECIAL_IDS: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class TokenizerMismatchError(ValueError):
    """Two tokenizers (e.g. teacher and student) do not map text to the same ids."""


class DistilleryTokenizer:
    """A thin, typed wrapper over a ``tokenizers.Tokenizer`` that enforces the special-token contract."""

    def __init__(self, tokenizer: Tokenizer, model_max_length: int = 2048) -> None:
        for token, expected in SPECIAL_IDS.items():
            actual = tokenizer.token_to_id(token)
            if actual != expected:
                raise TokenizerMismatchError(
                    f"special token {token!r} has id {actual}, the Distillery contract requires {expected}"
                )
        self._tok = tokenizer
        self.model_max_length = model_max_length

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2,
              model_max_length: int = 2048) -> DistilleryTokenizer:
        """Train byte-level BPE on an iterator of texts; specials first, then the 256 byte symbols."""
        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte symbols plus "
                f"{len(SPECIAL_TOKENS)} special tokens"
            )
        tok = Tokenizer(models.BPE())
        # Digits are split one by one (as in Llama): numbers then tokenize consistently, which arithmetic
        # needs ("23" and "18" become the same kind of token sequence instead of arbitrary merges).
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_as_iterator(texts), trainer=trainer)
        return cls(tok, model_max_length)

    @classmethod
    def train_from_files(cls, paths: Iterable[str | Path], **kwargs: int) -> DistilleryTokenizer:
        """Train on text files (read line by line, never whole)."""

        def lines() -> Iterator[str]:
            for path in paths:
                with open(path, encoding="utf-8") as fh:
                    yield from fh

        return cls.train(lines(), **kwargs)

    @classmethod
    def load(cls, directory: str | Path) -> DistilleryTokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json`` when present) from a directory."""
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a Distillery tokenizer directory holds {TOKENIZER_FILE}")
        max_len = 2048
        cfg_path = directory / TOKENIZER_CONFIG_FILE
        if cfg_path.is_file():
            max_len = int(json.loads(cfg_path.read_text()).get("model_max_length", max_len))
        return cls(Tokenizer.from_file(str(path)), max_len)

    def save(self, directory: str | Path) -> list[str]:
        """Write tokenizer.json and tokenizer_config.json; returns the file names written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / TOKENIZER_FILE))
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(self.hf_config(), indent=2) + "\n")
        return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]

    def hf_config(self) -> dict[str, object]:
        """The ``tokenizer_config.json`` that ``PreTrainedTokenizerFast`` reads."""
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "additional_special_tokens": list(SPECIAL_TOKENS[4:]),
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            "padding_side": "left",
        }

    # ---- use ----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    bos_id = BOS_ID
    eos_id = EOS_ID
    pad_id = PAD_ID
    unk_id = UNK_ID

    def token_id(self, token: str) -> int:
        """Id of a single token (special or regular); raises KeyError when absent."""
        value = self._tok.token_to_id(token)
        if value is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return value

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in the text map to their fixed ids."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Batch of texts -> lists of ids (no bos/eos), encoded in parallel by ``tokenizers``."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text; ``decode(encode(s)) == s`` for any unicode string."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def fingerprint(self) -> str:
        """sha256 of the vocabulary, merges, added/special tokens and pre-tokenization: equal fingerprints
        mean equal ids."""
        state = json.loads(self._tok.to_str())
        model = state.get("model", {})
        # added tokens (ids, and how they match: lstrip/rstrip/normalized/...) change ids without touching
        # the BPE vocabulary, so they are part of the fingerprint
        added = sorted((state.get("added_tokens") or []), key=lambda t: t.get("id", -1))
        payload = json.dumps(
            {"vocab": model.get("vocab"), "merges": model.get("merges"), "specials": list(SPECIAL_TOKENS),
             "added": added, "pre": state.get("pre_tokenizer"), "norm": state.get("normalizer")},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def vocab(self) -> dict[str, int]:
        """token -> id, special tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok


def check_tokenizers_match(teacher: DistilleryTokenizer, student: DistilleryTokenizer,
                           sample_limit: int = 5) -> None:
    """Raise :class:`TokenizerMismatchError` naming the differences unless both map text identically."""
    if teacher.fingerprint() == student.fingerprint():
        return
    problems: list[str] = []
    if teacher.vocab_size != student.vocab_size:
        problems.append(f"vocab size {teacher.vocab_size} (teacher) vs {student.vocab_size} (student)")
    tv, sv = teacher.vocab(), student.vocab()
    only_t = sorted(set(tv) - set(sv))
    only_s = sorted(set(sv) - set(tv))
    moved = sorted(t for t in set(tv) & set(sv) if tv[t] != sv[t])
    if only_t:
        problems.append(f"{len(only_t)} tokens only in the teacher, e.g. {only_t[:sample_limit]}")
    if only_s:
        problems.append(f"{len(only_s)} tokens only in the student, e.g. {only_s[:sample_limit]}")
    if moved:
        examples = [f"{t!r}: {tv[t]} vs {sv[t]}" for t in moved[:sample_limit]]
        problems.append(f"{len(moved)} tokens with different ids, e.g. {examples}")
    if not problems:
        problems.append("same vocabulary but different merges or pre-tokenization (texts split differently)")
    raise TokenizerMismatchError(
        "teacher and student tokenizers differ: " + "; ".join(problems)
        + ". Token-level KD needs identical tokenizers: train the student with the teacher's tokenizer, "
        "or choose a cross-tokenizer strategy (sequence-level KD on teacher-generated text)."
    )


def _as_iterator(texts: Iterable[str]) -> Iterator[str]:
    yield from texts
