"""Teacher tokenizers: any Hugging Face tokenizer, wrapped as a :class:`~training.tokenizer.DistilleryTokenizer`.

A Hugging Face teacher (or a served model) may use any tokenizer; :class:`DistilleryTokenizer` reads its roles
(bos/eos/pad/unk) and chat template from its own config, so :func:`training.tokenizer.check_tokenizers_match`
compares it with the student's and sequence-level KD works with any pair. :class:`ForeignTokenizer` builds
one from a backend and explicit role tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from training.tokenizer import (
    DistilleryTokenizer,
    TokenizerMismatchError,
    TokenRoles,
    backend_fingerprint,
)

__all__ = ["ForeignTokenizer", "TeacherTokenizer", "backend_fingerprint", "from_hf_tokenizer",
           "load_teacher_tokenizer", "render_chat"]


class ForeignTokenizer(DistilleryTokenizer):
    """A ``tokenizers.Tokenizer`` with its own special tokens (bos / pad may be absent: ``None``)."""

    def __init__(
        self,
        backend: Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | None = None,
        model_max_length: int = 2048,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(backend, model_max_length, roles=TokenRoles(bos_token, eos_token, pad_token, unk_token),
                         chat_template=chat_template, config=config)


TeacherTokenizer = DistilleryTokenizer


def from_hf_tokenizer(fast: Any) -> DistilleryTokenizer:
    """Wrap a ``transformers`` fast tokenizer (its backend, roles, chat template and bos policy)."""
    backend = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    max_len = getattr(fast, "model_max_length", 2048)
    max_len = int(max_len) if isinstance(max_len, int) and max_len < 10**9 else 2048
    template = getattr(fast, "chat_template", None)
    template = template if isinstance(template, str) else None
    roles = TokenRoles(fast.bos_token, fast.eos_token, fast.pad_token, fast.unk_token)
    try:
        native = DistilleryTokenizer(backend, max_len, chat_template=template)
        if roles == native.roles:
            return native
    except TokenizerMismatchError:
        pass
    # What transformers really does at the start of a sequence (its ``add_bos_token`` attribute is not
    # reliable across versions): encode one character with special tokens and look.
    bos_id = fast.bos_token_id
    first = fast("a")["input_ids"][:1] if bos_id is not None else []
    config = {"add_bos_token": bool(first) and first[0] == bos_id}
    return ForeignTokenizer(backend, bos_token=roles.bos, eos_token=roles.eos, pad_token=roles.pad,
                            unk_token=roles.unk, chat_template=template, model_max_length=max_len, config=config)


def load_teacher_tokenizer(directory: str | Path) -> DistilleryTokenizer:
    """The tokenizer in ``directory`` (any Hugging Face tokenizer directory)."""
    return DistilleryTokenizer.load(directory)


def render_chat(tokenizer: DistilleryTokenizer, messages: list[dict[str, str]]) -> str:
    """Chat messages -> one prompt text: the tokenizer's chat template (with the generation prompt) when it has
    one, else the contents joined by newlines (Distillery's bundled models are trained on plain prompts)."""
    if getattr(tokenizer, "chat_template", None) is not None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages)
