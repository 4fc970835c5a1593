"""The judge: a Distillery transformer backbone with a scalar score head and optional clause/step heads.

Input: ``<bos>`` + prompt + response + ``<eos>`` token ids (B, T), right or left padded, with an attention
mask (B, T) of 1 for real tokens. The backbone is a :class:`training.model.Student` (its LM head is unused
here), so a judge artifact is a student artifact plus head tensors and the same export paths apply.

* score head: ``Linear(F, 1)`` on the last real token's features -> a reward (B,) (Bradley-Terry
  scale: ``P(a beats b | not a tie) = sigmoid(score_a - score_b)``);
* clause head (optional): ``Linear(F, C)`` on the same features -> clause logits (B, C), one per clause;
* step head (optional): ``Linear(F, 1)`` on every position -> step logits (B, T); a step's logit is the one
  at its ``</step>`` token (:data:`STEP_END_ID`), which sees the prompt and every step up to that one.

A position's features are its final hidden state (H), followed, with ``surprise_features`` (the default),
by three numbers from the backbone's own LM head (:func:`surprise_features`): how surprising the token
is, the largest surprise so far in the response and the summed surprise so far, each ``log1p``-squashed
(F = H + 3). A wrong step is a token the LM did not expect, and every step after it inherits the running
maximum, which is exactly what the step labels say; the heads learn how to weigh these against the hidden
state. The backbone's LM is trained on good responses (:mod:`arbiter.judge_training.train`). Surprise needs
to know where the response starts: ``response_mask`` (B, T), 1 on response tokens and the final ``<eos>``.

``tie_log_nu`` is the log of Davidson's tie parameter (see :mod:`arbiter.judge_training.losses`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.model import Student
from training.tokenizer import SPECIAL_IDS

STEP_END_ID = SPECIAL_IDS["</step>"]
HEAD_PREFIX = "judge."
NUM_SURPRISE_FEATURES = 3


@dataclass
class JudgeOutput:
    """score: (B,) reward; clause_logits: (B, C) or None; step_logits: (B, T) or None (read them at
    ``</step>`` positions only); hidden: (B, T, H) final hidden states."""

    score: Tensor
    clause_logits: Tensor | None
    step_logits: Tensor | None
    hidden: Tensor


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(B, T) mask -> (B,) index of the last real token of each row (right or left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions[None, :] * attention_mask.long()).amax(dim=-1)


def gather_last(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, T, F) per-position features -> (B, F) features of the last real token of each row."""
    index = last_token_index(attention_mask)[:, None, None].expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index).squeeze(1)


def surprise_features(logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
    """(B, T, V) next-token logits, (B, T) ids and response mask -> (B, T, 3) features
    ``log1p([s_t, max_{u<=t} s_u, sum_{u<=t} s_u])`` where ``s_t = -log p(token_t | tokens before t)`` on
    response positions and 0 elsewhere. The running maximum uses a (T, T) lower-triangular mask (no cummax,
    so every exporter handles it)."""
    log_probs = logits.float().log_softmax(dim=-1)
    taken = log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    surprise = torch.cat((torch.zeros_like(taken[:, :1]), -taken), dim=1) * response_mask.to(taken.dtype)
    length = surprise.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=surprise.device).tril()
    running_max = torch.where(earlier[None], surprise[:, None, :], torch.zeros_like(surprise[:, None, :])).amax(-1)
    return torch.log1p(torch.stack((surprise, running_max, surprise.cumsum(dim=1)), dim=-1))


class JudgeModel(nn.Module):
    """Backbone plus heads; ``forward(input_ids, attention_mask, response_mask)`` returns a
    :class:`JudgeOutput` (``response_mask`` is needed only with ``surprise_features``)."""

    def __init__(self, backbone: Student, clauses: Sequence[str] = (), step_head: bool = True,
                 surprise_features: bool = True) -> None:
        super().__init__()
        if len(set(clauses)) != len(clauses):
            raise ValueError(f"clause names must be distinct, got {list(clauses)}")
        features = backbone.config.hidden_size + (NUM_SURPRISE_FEATURES if surprise_features else 0)
        std = backbone.config.initializer_range
        self.backbone = backbone
        self.clauses: tuple[str, ...] = tuple(clauses)
        self.surprise_features = surprise_features
        self.score_head = nn.Linear(features, 1)
        self.clause_head = nn.Linear(features, len(self.clauses)) if self.clauses else None
        self.step_head = nn.Linear(features, 1) if step_head else None
        self.tie_log_nu = nn.Parameter(torch.zeros(()))
        for head in (self.score_head, self.clause_head, self.step_head):
            if head is not None:
                nn.init.normal_(head.weight, std=std)
                nn.init.zeros_(head.bias)

    @property
    def has_step_head(self) -> bool:
        return self.step_head is not None

    def num_parameters(self) -> int:
        """Distinct parameters of backbone and heads (a tied LM head counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def forward(self, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor | None = None
                ) -> JudgeOutput:
        """input_ids, attention_mask, response_mask: (B, T) -> :class:`JudgeOutput`."""
        out = self.backbone.run(input_ids, attention_mask=attention_mask, compute_logits=self.surprise_features)
        hidden = out.last_hidden_state
        features = hidden
        if self.surprise_features:
            if response_mask is None:
                raise ValueError("this judge uses surprise features: pass response_mask (B, T)")
            assert out.logits is not None
            extra = surprise_features(out.logits, input_ids, response_mask)
            features = torch.cat((hidden, extra.to(hidden.dtype)), dim=-1)
        pooled = gather_last(features, attention_mask)
        score = self.score_head(pooled).squeeze(-1)
        clause_logits = self.clause_head(pooled) if self.clause_head is not None else None
        step_logits = self.step_head(features).squeeze(-1) if self.step_head is not None else None
        return JudgeOutput(score=score, clause_logits=clause_logits, step_logits=step_logits, hidden=hidden)

    def head_state_dict(self) -> dict[str, Tensor]:
        """Head tensors under :data:`HEAD_PREFIX` names (``judge.score_head.weight``, ...), detached."""
        return {
            f"{HEAD_PREFIX}{name}": tensor.detach().clone()
            for name, tensor in self.state_dict().items()
            if not name.startswith("backbone.")
        }

    def load_head_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`head_state_dict`; every head tensor must be present with its shape."""
        expected = self.head_state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"judge head tensors do not match: missing {missing}, unexpected {unexpected}")
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        own = {name.removeprefix(HEAD_PREFIX): tensor for name, tensor in tensors.items()}
        self.load_state_dict(own, strict=False)
