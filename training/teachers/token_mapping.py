"""Token strings returned by an OpenAI-compatible server -> token ids of the teacher tokenizer.

Three formats (``token_format``):

* ``token_id``: ``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``; the Distillery server too). Exact.
* ``vocab``: the raw vocabulary string of the token (e.g. ``"Ġthe"`` in byte-level BPE). Exact.
* ``text``: the decoded text of one token (e.g. ``" the"``, what OpenAI and vLLM return by default). Accepted
  only when it round-trips: it must encode to exactly one id that decodes back to the same text. A token
  that is part of a multi-byte character (decoded as ``"\\ufffd"``) or that the tokenizer would split never
  round-trips, and is refused rather than guessed.
"""

from __future__ import annotations

import re
import threading
from typing import Literal

from training.teachers.teacher_tokenizer import TeacherTokenizer

TokenFormat = Literal["token_id", "vocab", "text"]
_TOKEN_ID = re.compile(r"token_id:(\d+)")


class TokenMappingError(ValueError):
    """A token string from the server cannot be mapped to exactly one teacher id."""


class TokenMapper:
    """``to_id(token_string) -> id`` for one tokenizer and format (memoized, thread-safe)."""

    def __init__(self, tokenizer: TeacherTokenizer, token_format: TokenFormat) -> None:
        if token_format not in ("token_id", "vocab", "text"):
            raise ValueError(f"unknown token_format {token_format!r}")
        self.tokenizer = tokenizer
        self.token_format = token_format
        self.vocab_size = tokenizer.vocab_size
        self._vocab = tokenizer.vocab() if token_format == "vocab" else {}
        self._memo: dict[str, int] = {}
        self._lock = threading.Lock()

    def to_id(self, token: str) -> int:
        with self._lock:
            hit = self._memo.get(token)
        if hit is not None:
            return hit
        value = self._map(token)
        with self._lock:
            self._memo[token] = value
        return value

    def _map(self, token: str) -> int:
        if self.token_format == "token_id":
            match = _TOKEN_ID.fullmatch(token)
            if match is None:
                raise TokenMappingError(
                    f"expected a 'token_id:N' token from the server, got {token!r}; the server ignores "
                    "return_tokens_as_token_ids: use token_format='vocab' or 'text'"
                )
            value = int(match.group(1))
            if value >= self.vocab_size:
                raise TokenMappingError(
                    f"server token id {value} is outside the teacher vocabulary "
                    f"({self.vocab_size} ids): the server runs another tokenizer"
                )
            return value
        if self.token_format == "vocab":
            if token not in self._vocab:
                raise TokenMappingError(f"token {token!r} from the server is not in the teacher vocabulary")
            return self._vocab[token]
        ids = self.tokenizer.encode(token)
        if len(ids) != 1 or self.tokenizer.decode(ids) != token:
            raise TokenMappingError(
                f"token text {token!r} from the server does not round-trip through the teacher tokenizer "
                f"(it encodes to {ids[:8]}); ask the server for token ids instead (token_format='token_id', "
                "vLLM: return_tokens_as_token_ids)"
            )
        return ids[0]
