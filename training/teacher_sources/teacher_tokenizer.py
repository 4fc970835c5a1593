"""Teacher tokenizers that need not follow Distillery's special-token contract.

A Hugging Face teacher (or a served model) may use any tokenizer. :func:`load_teacher_tokenizer` returns a
:class:`~training.tokenizer.DistilleryTokenizer` when the tokenizer satisfies the contract and a
:class:`ForeignTokenizer` otherwise. Both expose what teacher code and the tokenizer checks use
(``encode``, ``decode``, ``vocab``, ``vocab_size``, ``fingerprint``, ``bos_id``/``eos_id``/``pad_id``,
``save``), so :func:`training.tokenizer.check_tokenizers_match` names the differences between a foreign
teacher tokenizer and the student's, and sequence-level KD works with any pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from training.tokenizer import (
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    DistilleryTokenizer,
    TokenizerMismatchError,
)


def backend_fingerprint(backend: Tokenizer, specials: list[str]) -> str:
    """sha256 over vocabulary, merges, added tokens, pre-tokenizer and normalizer (as DistilleryTokenizer)."""
    state = json.loads(backend.to_str())
    model = state.get("model", {})
    added = sorted((state.get("added_tokens") or []), key=lambda t: t.get("id", -1))
    payload = json.dumps(
        {
            "vocab": model.get("vocab"),
            "merges": model.get("merges"),
            "specials": specials,
            "added": added,
            "pre": state.get("pre_tokenizer"),
            "norm": state.get("normalizer"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class ForeignTokenizer:
    """A ``tokenizers.Tokenizer`` with its own special tokens (bos / eos / pad may be absent: ``None``)."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        chat_template: Any | None = None,
        model_max_length: int = 2048,
    ) -> None:
        self._tok = backend
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.bos_id = backend.token_to_id(bos_token) if bos_token else None
        self.eos_id = backend.token_to_id(eos_token) if eos_token else None
        pad = backend.token_to_id(pad_token) if pad_token else None
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        self.chat_template = chat_template
        self.model_max_length = model_max_length

    @classmethod
    def load(cls, directory: str | Path) -> ForeignTokenizer:
        """Read ``tokenizer.json`` and the special tokens named in ``tokenizer_config.json``."""
        directory = Path(directory)
        config: dict[str, Any] = {}
        if (directory / TOKENIZER_CONFIG_FILE).is_file():
            config = json.loads((directory / TOKENIZER_CONFIG_FILE).read_text())
        return cls(
            Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
            pad_token=_token_text(config.get("pad_token")),
            model_max_length=int(config.get("model_max_length") or 2048),
        )

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> ids (bos / eos only when requested and the tokenizer has them)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        head = [self.bos_id] if add_bos and self.bos_id is not None else []
        tail = [self.eos_id] if add_eos and self.eos_id is not None else []
        return head + ids + tail

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        value = self._tok.token_to_id(token)
        if value is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return value

    def fingerprint(self) -> str:
        return backend_fingerprint(
            self._tok, [t for t in (self.bos_token, self.eos_token, self.pad_token) if t]
        )

    def hf_config(self) -> dict[str, Any]:
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
        }

    def save(self, directory: str | Path) -> list[str]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / TOKENIZER_FILE))
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(self.hf_config(), indent=2) + "\n")
        return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]


TeacherTokenizer = DistilleryTokenizer | ForeignTokenizer


def from_hf_tokenizer(fast: Any) -> TeacherTokenizer:
    """Wrap a ``transformers`` fast tokenizer: a DistilleryTokenizer when the contract holds, else foreign."""
    backend = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    try:
        return DistilleryTokenizer(backend, int(getattr(fast, "model_max_length", 2048) or 2048))
    except TokenizerMismatchError:
        pass
    max_len = getattr(fast, "model_max_length", 2048)
    return ForeignTokenizer(
        backend,
        bos_token=fast.bos_token,
        eos_token=fast.eos_token,
        pad_token=fast.pad_token,
        chat_template=fast if getattr(fast, "chat_template", None) else None,
        model_max_length=int(max_len) if isinstance(max_len, int) and max_len < 10**9 else 2048,
    )


def load_teacher_tokenizer(directory: str | Path) -> TeacherTokenizer:
    """The tokenizer in ``directory``: Distillery's when it follows the contract, else a ForeignTokenizer."""
    try:
        return DistilleryTokenizer.load(directory)
    except TokenizerMismatchError:
        return ForeignTokenizer.load(directory)


def render_chat(tokenizer: TeacherTokenizer, messages: list[dict[str, str]]) -> str:
    """Chat messages -> one prompt text: the tokenizer's chat template when it has one, else the contents
    joined by newlines (Distillery models are trained on plain prompts)."""
    template_owner = getattr(tokenizer, "chat_template", None)
    if template_owner is not None:
        return str(template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "\n".join(m["content"] for m in messages)
