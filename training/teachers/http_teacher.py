"""A teacher behind an OpenAI-compatible HTTP endpoint: sparse top-k targets and generated text.

Token-level targets (``/v1/completions``). A batch row's real tokens ``x_0 .. x_{L-1}`` (padding removed
with the attention mask, ``bos`` included) are sent as the prompt, as a list of ints::

    {"model": M, "prompt": [x_0, ..., x_{L-1}], "echo": true, "max_tokens": 1, "temperature": 0,
     "logprobs": K, "return_tokens_as_token_ids": true}        # the last key only for token_format=token_id

With ``echo`` the server returns ``logprobs.tokens`` (the prompt, then the one generated token) and
``logprobs.top_logprobs``, one entry per returned token: entry ``0`` is null (nothing predicts the first
token), entry ``i`` (``1 <= i <= L``) is the teacher's top-K at position ``i - 1``. So the target at
position ``t`` is entry ``t + 1`` for ``t = 0 .. L - 1``; the one generated token (``max_tokens: 1``)
provides the last position's distribution, which a sequence truncated at ``max_length`` needs. The echoed
tokens must map back to the ids sent (else the server tokenizes differently and the request is refused),
and each entry must hold at least K distinct ids (extra entries, e.g. vLLM's sampled token, are dropped
after sorting). Token strings map to ids with :class:`~training.teachers.token_mapping.TokenMapper`.

Text (sequence-level KD): ``/v1/chat/completions`` (one user message) or ``/v1/completions`` with a text
prompt, chosen by ``text_endpoint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from training.teachers.base import TeacherTargets, padded_topk, real_positions
from training.teachers.http_client import OpenAIClient, RetryPolicy
from training.teachers.local import GenerationParams
from training.teachers.teacher_tokenizer import TeacherTokenizer, load_teacher_tokenizer
from training.teachers.token_mapping import TokenFormat, TokenMapper

if TYPE_CHECKING:
    from training.teachers.config import TeacherSection


class TeacherResponseError(ValueError):
    """The server's answer cannot be turned into targets (missing entries, wrong tokens, too few top-k)."""


class HttpTeacher:
    """OpenAI-compatible server as a teacher; ``targets`` gives sparse (B, T, K) top-k log-probs."""

    def __init__(
        self,
        client: OpenAIClient,
        model: str,
        tokenizer: TeacherTokenizer,
        *,
        top_k: int = 20,
        token_format: TokenFormat = "token_id",
        vocab_size: int | None = None,
        text_endpoint: Literal["chat", "completions"] = "chat",
        check_server: bool = True,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.client = client
        self.model = model
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.token_format = token_format
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.text_endpoint = text_endpoint
        self.mapper = TokenMapper(tokenizer, token_format)
        if check_server:
            self.check_server()

    @classmethod
    def from_section(cls, section: TeacherSection) -> HttpTeacher:
        """Build from a validated ``kind='http'`` config section."""
        assert section.url is not None and section.model is not None and section.tokenizer is not None
        client = OpenAIClient(
            section.url,
            api_key_env=section.api_key_env,
            timeout_s=section.timeout_s,
            retry=RetryPolicy(section.max_retries, section.backoff_s, section.backoff_max_s),
            concurrency=section.concurrency,
            cache_dir=section.response_cache,
        )
        return cls(
            client,
            section.model,
            load_teacher_tokenizer(section.tokenizer),
            top_k=section.top_k,
            token_format=section.token_format,
            vocab_size=section.vocab_size,
            text_endpoint=section.text_endpoint,
        )

    def check_server(self) -> None:
        """The server must list ``model``; a Distillery server also states its tokenizer, which must match."""
        listing = self.client.get("/models").get("data", [])
        entries = {m.get("id"): m for m in listing if isinstance(m, dict)}
        if self.model not in entries:
            raise TeacherResponseError(
                f"{self.client.base_url} serves {sorted(map(str, entries))}, not {self.model!r}"
            )
        info = entries[self.model].get("distillery")
        if isinstance(info, dict):
            fingerprint = info.get("tokenizer_fingerprint")
            if fingerprint is not None and fingerprint != self.tokenizer.fingerprint():
                raise TeacherResponseError(
                    f"the server's tokenizer (fingerprint {str(fingerprint)[:12]}) differs from the teacher "
                    f"tokenizer configured here ({self.tokenizer.fingerprint()[:12]}): point "
                    "teacher.tokenizer "
                    "at the served model's tokenizer"
                )

    # ---- token-level targets ------------------------------------------------------------------------
    def logprob_request(self, ids: Sequence[int]) -> dict[str, Any]:
        """The /v1/completions body that asks for the top-K at every position of ``ids``."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(i) for i in ids],
            "echo": True,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.top_k,
        }
        if self.token_format == "token_id":
            body["return_tokens_as_token_ids"] = True
        return body

    def row_targets(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """One sequence (L,) -> (L, K) int64 ids and (L, K) float64 log-probs, sorted by log-prob."""
        length = len(ids)
        if length == 0:
            raise ValueError("cannot query the teacher for an empty sequence")
        response = self.client.post("/completions", self.logprob_request(ids))
        try:
            logprobs = response["choices"][0]["logprobs"]
            tokens, top = logprobs["tokens"], logprobs["top_logprobs"]
        except (KeyError, IndexError, TypeError) as exc:
            raise TeacherResponseError(
                f"the server's answer has no choices[0].logprobs.tokens/top_logprobs "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if len(tokens) < length or len(top) < length + 1:
            raise TeacherResponseError(
                f"sent {length} prompt tokens with echo and max_tokens=1, got {len(tokens)} tokens and "
                f"{len(top)} "
                "top_logprobs entries (need prompt + 1): the server must support echo with logprobs"
            )
        echoed = [self.mapper.to_id(t) for t in tokens[:length]]
        if echoed != list(ids):
            where = next(i for i, (a, b) in enumerate(zip(echoed, ids, strict=True)) if a != b)
            raise TeacherResponseError(
                f"the server echoed token {echoed[where]} at position {where} where "
                f"{ids[where]} was sent: it tokenizes differently from the teacher tokenizer"
            )
        out_ids = np.empty((length, self.top_k), dtype=np.int64)
        out_lp = np.empty((length, self.top_k), dtype=np.float64)
        for t in range(length):
            entry = top[t + 1]
            if not isinstance(entry, dict):
                raise TeacherResponseError(f"top_logprobs entry {t + 1} (position {t}) is {entry!r}")
            best: dict[int, float] = {}
            for token, value in entry.items():
                tid = self.mapper.to_id(token)
                best[tid] = max(float(value), best.get(tid, float("-inf")))
            if len(best) < self.top_k:
                raise TeacherResponseError(
                    f"position {t}: the server returned {len(best)} distinct top tokens, fewer than top_k="
                    f"{self.top_k} (its max logprobs may be lower, e.g. vLLM --max-logprobs)"
                )
            ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[: self.top_k]
            out_ids[t] = [i for i, _ in ranked]
            out_lp[t] = [v for _, v in ranked]
        return out_ids, out_lp

    def targets(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TeacherTargets:
        """(B, T) ids -> sparse targets (B, T, K); padding positions hold ids 0..K-1 with log-prob -inf."""
        batch, width = input_ids.shape
        positions = real_positions(attention_mask, input_ids)
        sequences = [input_ids[b, positions[b]].tolist() for b in range(batch)]
        rows = self.client.map(self.row_targets, sequences)
        ids, lps = padded_topk(batch, width, self.top_k)
        for b, (row_ids, row_lp) in enumerate(rows):
            ids[b, positions[b]] = torch.from_numpy(row_ids)
            lps[b, positions[b]] = torch.from_numpy(row_lp).float()
        return TeacherTargets(topk_ids=ids, topk_logprobs=lps)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError("an HTTP teacher gives sparse top-k log-probs only: use targets()")

    # ---- text ----------------------------------------------------------------------------------------
    def generate_text(self, prompt: str, params: GenerationParams) -> str:
        """The teacher's completion of one prompt (chat: the prompt is one user message)."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if self.text_endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            response = self.client.post("/chat/completions", body)
            path = ("choices", 0, "message", "content")
        else:
            body["prompt"] = prompt
            response = self.client.post("/completions", body)
            path = ("choices", 0, "text")
        node: Any = response
        try:
            for part in path:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            raise TeacherResponseError(f"the server's answer has no {'.'.join(map(str, path))}") from None
        if not isinstance(node, str):
            raise TeacherResponseError(f"{'.'.join(map(str, path))} is not a string")
        return node

    def generate_texts(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """Completions of several prompts, ``concurrency`` requests at a time."""
        return self.client.map(lambda p: self.generate_text(p, params), list(prompts))
