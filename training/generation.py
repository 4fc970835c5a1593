"""Batched autoregressive generation with a KV cache (greedy, temperature, top-k, top-p, eos stop)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from training.model import Student


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``do_sample=False`` is greedy decoding (argmax)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0 or self.temperature == float("inf"):  # also refuses NaN and inf
            raise ValueError(
                f"temperature must be finite and > 0, got {self.temperature} (use do_sample=False for greedy)"
            )
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Mask logits (B, V) outside the top-k and outside the smallest set with cumulative prob >= top_p.

    Masked entries become -inf; at least one token (the argmax) always survives.
    """
    out = logits.clone()
    if top_k > 0 and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def next_token(logits: Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None) -> Tensor:
    """Pick one token per row from logits (B, V) -> (B,) long."""
    if not sampling.do_sample:
        return logits.argmax(-1)
    filtered = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    probs = filtered.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: Student,
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue each prompt; prompts of different lengths are left-padded.

    input_ids: (B, T) prompts, left-padded; attention_mask: (B, T) with 1 for real tokens (default all 1).
    Returns (B, T + n) with n <= max_new_tokens: prompt then generated tokens; after a row emits
    ``eos_token_id`` its remaining positions hold ``pad_token_id``. Generation stops early once every row
    has finished. ``use_cache=False`` recomputes the whole sequence each step (the slow reference).
    """
    sampling = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    cfg = model.config
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    was_training = model.training
    model.eval()
    b = input_ids.shape[0]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
    tokens = input_ids
    finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    cache = None
    step_input = input_ids
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                out = model.run(step_input, attention_mask=mask, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            else:
                out = model.run(tokens, attention_mask=mask)
            assert out.logits is not None
            chosen = next_token(out.logits[:, -1], sampling, generator)
            chosen = torch.where(finished, torch.full_like(chosen, pad), chosen)
            tokens = torch.cat((tokens, chosen[:, None]), dim=1)
            mask = torch.cat((mask, (~finished).to(mask.dtype)[:, None]), dim=1)
            finished = finished | (chosen == eos)
            step_input = chosen[:, None]
            if bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return tokens


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists into input_ids (B, T) and attention_mask (B, T) for :func:`generate`."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask
