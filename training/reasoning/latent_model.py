"""Latent reasoning with a :class:`~training.model.Student`: the multi-pass forward, the halt head, batched
latent generation, and the latent student artifact.

Hidden-state feedback. The input of a latent position is the student's hidden state at the previous
position (Coconut, Hao et al. 2024). ``feedback="post_norm"`` (the default) feeds
``StudentOutput.last_hidden_state``, the output of the final RMSNorm: what Coconut feeds, since Hugging
Face's ``hidden_states[-1]`` is taken after the final norm. It is also the vector the (tied) output
projection reads, so its scale does not grow with depth. ``"pre_norm"`` feeds the last decoder layer's
output before that norm (``StudentOutput.hidden_states[-1]`` here). ``"post_norm_scaled"`` feeds the post-norm
state rescaled, per vector, to the mean L2 norm of the token-embedding rows (:func:`latent_input`), so a
latent input has the scale of the token inputs the layers were trained on.

Multi-pass forward with the KV cache (:func:`latent_forward`): one pass over the prefix up to and
including ``<bot>``; then one pass per latent slot with ``inputs_embeds`` = the previous position's hidden
state (``(B, 1, H)``) and the cache; then one pass over the suffix with the cache. Nothing is detached, so
the loss backpropagates through every latent feedback and cache entry (``detach_feedback=True`` cuts the
chain at the fed-back vectors, truncated backpropagation). The ``<latent>`` token id is never looked up.

Batching follows :mod:`training.reasoning.latent_data`: left-padded prefixes put ``<bot>`` in the last prefix column
for every row; a row with fewer latents than the widest gets holes (attention mask 0, zeros as input) after
its own latents; positions come from the attention mask, so holes and padding shift nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from training.artifact import extra_tensors, load_student
from training.generation import left_pad
from training.model import LayerCache, Student, StudentOutput
from training.reasoning.latent_data import BOT_ID, EOT_ID, LatentBatch
from training.tokenizer import DistilleryTokenizer

Feedback = Literal["post_norm", "pre_norm", "post_norm_scaled"]
LATENT_SPEC_FILE = "latent.json"
HALT_PREFIX = "latent_halt."

__all__ = [
    "HALT_PREFIX",
    "LATENT_SPEC_FILE",
    "Feedback",
    "HaltHead",
    "LatentForward",
    "LatentGeneration",
    "LatentSpec",
    "LatentStudent",
    "answer_state_distill_loss",
    "answer_states",
    "feed_latents",
    "feedback_hidden",
    "generate_latent",
    "halt_loss",
    "halt_targets",
    "latent_forward",
    "latent_input",
    "load_latent_student",
    "run_prefix",
    "save_latent_student",
    "thought_decoder_loss",
]


class LatentSpec(BaseModel):
    """How a latent student reasons at inference (``latent.json`` in its artifact)."""

    model_config = ConfigDict(extra="forbid")

    latents_per_step: int = Field(ge=1)
    max_stage: int = Field(ge=0)
    num_latents: int = Field(ge=0, description="latent positions at inference (the most, with a halt head)")
    feedback: Feedback = "post_norm"
    adaptive: bool = Field(False, description="trained with min(stage, steps) * c latents and a halt head")
    halt_threshold: float = Field(0.5, gt=0, lt=1)
    bot_id: int = BOT_ID
    eot_id: int = EOT_ID


def feedback_hidden(out: StudentOutput, feedback: Feedback) -> Tensor:
    """(B, T, H) the hidden states fed back: after (``post_norm``, ``post_norm_scaled``) or before
    (``pre_norm``) the final norm (the rescaling of ``post_norm_scaled`` is :func:`latent_input`'s)."""
    if feedback in ("post_norm", "post_norm_scaled"):
        return out.last_hidden_state
    if out.hidden_states is None:
        raise ValueError("pre_norm feedback needs output_hidden_states=True")
    return out.hidden_states[-1]


def run_prefix(model: Student, prefix_ids: Tensor, prefix_mask: Tensor,
               feedback: Feedback) -> tuple[Tensor, list[LayerCache], Tensor]:
    """Prefix pass over left-padded ids (B, P) ending in ``<bot>`` -> (hidden at ``<bot>`` (B, H), cache,
    attention mask (B, P))."""
    out = model.run(prefix_ids, attention_mask=prefix_mask, use_cache=True,
                    output_hidden_states=feedback == "pre_norm", compute_logits=False)
    assert out.past_key_values is not None
    return feedback_hidden(out, feedback)[:, -1], out.past_key_values, prefix_mask


def latent_input(model: Student, hidden: Tensor, feedback: Feedback) -> Tensor:
    """The vector fed at a latent slot from the fed-back hidden (B, H): ``hidden`` itself, or for
    ``post_norm_scaled`` ``hidden`` rescaled to the mean L2 norm of the token-embedding rows."""
    if feedback != "post_norm_scaled":
        return hidden
    target = model.model.embed_tokens.weight.norm(dim=-1).mean()
    return hidden * (target / hidden.norm(dim=-1, keepdim=True).clamp_min(1e-6))


def latent_step(model: Student, inputs: Tensor, real: Tensor, cache: list[LayerCache], mask: Tensor,
                feedback: Feedback) -> tuple[Tensor, list[LayerCache], Tensor]:
    """One latent slot: inputs (B, H) fed as ``inputs_embeds`` where ``real`` (B,) bool, a hole elsewhere.

    Returns (hidden at this slot (B, H), cache, mask (B, past + 1)).
    """
    x = torch.where(real[:, None], inputs, torch.zeros_like(inputs))
    mask = torch.cat((mask, real.to(mask.dtype)[:, None]), dim=1)
    out = model.run(inputs_embeds=x[:, None, :], attention_mask=mask, past_key_values=cache, use_cache=True,
                    output_hidden_states=feedback == "pre_norm", compute_logits=False)
    assert out.past_key_values is not None
    return feedback_hidden(out, feedback)[:, -1], out.past_key_values, mask


def feed_latents(model: Student, hidden: Tensor, cache: list[LayerCache], mask: Tensor, counts: Tensor,
                 feedback: Feedback, detach_feedback: bool = False
                 ) -> tuple[list[Tensor], list[Tensor], list[LayerCache], Tensor]:
    """Run ``max(counts)`` latent slots after a prefix; row ``b`` takes ``counts[b]`` latents, then holes.

    hidden: (B, H) the hidden state at ``<bot>``; counts: (B,) long. Returns (decision hiddens: the hidden at
    ``<bot>`` then after each slot, ``max(counts) + 1`` tensors (B, H); inputs fed at each slot (B, H);
    cache; mask (B, past + max(counts))). A row's hidden is carried unchanged through its holes.
    """
    hiddens = [hidden]
    inputs: list[Tensor] = []
    for j in range(int(counts.max()) if counts.numel() else 0):
        real = counts > j
        fed = latent_input(model, hidden.detach() if detach_feedback else hidden, feedback)
        inputs.append(fed)
        new, cache, mask = latent_step(model, fed, real, cache, mask, feedback)
        hidden = torch.where(real[:, None], new, hidden)
        hiddens.append(hidden)
    return hiddens, inputs, cache, mask


@dataclass
class LatentForward:
    """What :func:`latent_forward` computes.

    logits: (B, S, V) at the suffix positions; decision_hidden: (B, L + 1, H), the fed-back hidden at
    ``<bot>`` and after each latent slot (for the halt head); latent_inputs: L tensors (B, H), the vectors fed
    at each slot; attention_mask: (B, P + L + S); suffix_hidden_states: with ``output_hidden_states``, the
    embedding output and each layer's output at the suffix positions, num_layers + 1 tensors (B, S, H).
    """

    logits: Tensor
    decision_hidden: Tensor
    latent_inputs: list[Tensor]
    attention_mask: Tensor
    suffix_hidden_states: list[Tensor] | None = None


def latent_forward(model: Student, batch: LatentBatch, feedback: Feedback = "post_norm",
                   detach_feedback: bool = False, output_hidden_states: bool = False) -> LatentForward:
    """Teacher-forced multi-pass forward of a :class:`~training.reasoning.latent_data.LatentBatch` (differentiable)."""
    hidden, cache, mask = run_prefix(model, batch.prefix_ids, batch.prefix_mask, feedback)
    hiddens, inputs, cache, mask = feed_latents(model, hidden, cache, mask, batch.latent_counts, feedback,
                                                detach_feedback)
    mask = torch.cat((mask, batch.suffix_mask.to(mask.dtype)), dim=1)
    out = model.run(batch.suffix_ids, attention_mask=mask, past_key_values=cache,
                    output_hidden_states=output_hidden_states)
    assert out.logits is not None
    return LatentForward(logits=out.logits, decision_hidden=torch.stack(hiddens, dim=1), latent_inputs=inputs,
                         attention_mask=mask, suffix_hidden_states=out.hidden_states)


def answer_states(out: LatentForward, suffix_ids: Tensor, answer_id: int) -> list[Tensor]:
    """Each layer's hidden state (B, H) at the first ``answer_id`` token of each row's suffix, layers 1..L (the
    embedding output is left out: it is the same token's embedding in every layout). ``out`` needs
    ``suffix_hidden_states``; a row without the token is an error."""
    if out.suffix_hidden_states is None:
        raise ValueError("answer_states needs latent_forward(..., output_hidden_states=True)")
    hits = suffix_ids == answer_id
    if not bool(hits.any(dim=1).all()):
        raise ValueError(f"a suffix has no answer token (id {answer_id})")
    position = hits.long().argmax(dim=1)
    rows = torch.arange(suffix_ids.shape[0], device=suffix_ids.device)
    return [h[rows, position] for h in out.suffix_hidden_states[1:]]


def answer_state_distill_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """CODI's hidden-state distillation (Shen et al. 2025): mean over layers of the mean absolute difference
    between the student's and the (detached) teacher's states (B, H) at the answer token, each layer scaled by
    the teacher states' standard deviation (so layers of different scale weigh alike). A scalar >= 0, 0 iff
    the states are equal."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need the same non-zero number of layers, got {len(student)} and {len(teacher)}")
    terms = [(s.float() - t.detach().float()).abs().mean() / t.detach().float().std().clamp_min(1e-6)
             for s, t in zip(student, teacher, strict=True)]
    return torch.stack(terms).mean()


def thought_decoder_loss(model: Student, thoughts: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Step supervision of latent thoughts (SIM-CoT, Wei et al. 2025): the student itself, as decoder, reads
    one thought and must write the step it replaced.

    thoughts: (N, H) the vectors fed at the thought slots; ids / mask: (N, T) the steps' token ids,
    right-padded. The decoder input is ``[thought, embed(ids[:, :-1])]`` (the thought is the only context: no
    question, no earlier steps), position ``t`` predicts ``ids[:, t]``. Returns the mean next-token
    cross-entropy over the real target tokens (a scalar; 0 with grad when N = 0). Gradients reach the
    thoughts, hence the whole latent chain that produced them, and the shared weights.
    """
    if thoughts.shape[0] == 0:
        return thoughts.sum() * 0.0
    if ids.shape != mask.shape or thoughts.shape[0] != ids.shape[0]:
        raise ValueError(f"thoughts {tuple(thoughts.shape)}, ids {tuple(ids.shape)}, mask {tuple(mask.shape)} "
                         "do not match")
    embeds = model.model.embed_tokens(ids[:, :-1])
    x = torch.cat((thoughts[:, None, :].to(embeds.dtype), embeds), dim=1)
    out = model.run(inputs_embeds=x, attention_mask=mask)
    assert out.logits is not None
    labels = ids.masked_fill(mask == 0, -100)
    logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))  # fp32 at least, fp64 kept
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


# ---------------------------------------------------------------------------------------------------------
# Halt head
# ---------------------------------------------------------------------------------------------------------


class HaltHead(nn.Module):
    """Probability of stopping latent reasoning from a decision hidden state: (..., H) -> logits (...,)."""

    def __init__(self, hidden_size: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden).squeeze(-1)


def halt_targets(counts: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Targets of the halt head at decision points ``j = 0 .. width - 1`` (after ``j`` latents).

    counts: (B,) latents each row should take. Returns (targets (B, W) float, 1 at ``j == counts``; valid
    (B, W) bool, ``j <= counts``: later points are never reached by that row).
    """
    j = torch.arange(width, device=counts.device)[None, :]
    return (j == counts[:, None]).float(), j <= counts[:, None]


def halt_loss(logits: Tensor, counts: Tensor, rows: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy of halt logits (B, W) over valid decision points of the selected rows (B,)."""
    targets, valid = halt_targets(counts, logits.shape[1])
    if rows is not None:
        valid = valid & rows[:, None]
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[valid], targets[valid])


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LatentGeneration:
    """Per row: ``tokens`` decoded after ``<eot>`` (up to and including eos), ``latent_counts``; ``logits``:
    (B, n, V) the logits of each decoding step (rows that had finished hold the logits of their padding)."""

    tokens: list[list[int]]
    latent_counts: list[int]
    logits: Tensor


@torch.no_grad()
def generate_latent(model: Student, prompts: Sequence[Sequence[int]], *, num_latents: int,
                    eos_id: int, pad_id: int, max_new_tokens: int = 48, feedback: Feedback = "post_norm",
                    halt_head: HaltHead | None = None, halt_threshold: float = 0.5,
                    bot_id: int = BOT_ID, eot_id: int = EOT_ID) -> LatentGeneration:
    """Batched latent reasoning then greedy decoding.

    prompts: token ids (bos + prompt) per row, any lengths; ``<bot>`` is appended, ``num_latents`` latent
    slots run (with a halt head: until it says stop at a decision point, at most ``num_latents``), ``<eot>``
    is fed, and the answer is decoded greedily until eos or ``max_new_tokens``.
    """
    was_training = model.training
    model.eval()
    try:
        ids, mask = left_pad([[*p, bot_id] for p in prompts], pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        b = ids.shape[0]
        hidden, cache, mask = run_prefix(model, ids, mask, feedback)
        active = torch.ones(b, dtype=torch.bool, device=ids.device)
        counts = torch.zeros(b, dtype=torch.long, device=ids.device)
        for _ in range(num_latents):
            if halt_head is not None:
                active = active & (torch.sigmoid(halt_head(hidden)) <= halt_threshold)
            if not bool(active.any()):
                break
            new, cache, mask = latent_step(model, latent_input(model, hidden, feedback), active, cache, mask,
                                           feedback)
            hidden = torch.where(active[:, None], new, hidden)
            counts = counts + active.long()
        step_input = torch.full((b, 1), eot_id, dtype=torch.long, device=ids.device)
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
        chosen_all: list[Tensor] = []
        step_logits: list[Tensor] = []
        for _ in range(max_new_tokens):
            out = model.run(step_input, attention_mask=mask, past_key_values=cache, use_cache=True)
            assert out.logits is not None and out.past_key_values is not None
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            chosen = torch.where(finished, torch.full_like(finished, pad_id, dtype=torch.long), logits.argmax(-1))
            step_logits.append(logits)
            chosen_all.append(chosen)
            mask = torch.cat((mask, (~finished).to(mask.dtype)[:, None]), dim=1)
            finished = finished | (chosen == eos_id)
            step_input = chosen[:, None]
            if bool(finished.all()):
                break
    finally:
        model.train(was_training)
    tokens_t = torch.stack(chosen_all, dim=1).tolist() if chosen_all else [[] for _ in range(b)]
    tokens = []
    for row in tokens_t:
        tokens.append(row[:row.index(eos_id) + 1] if eos_id in row else row)
    logits_t = torch.stack(step_logits, dim=1) if step_logits else torch.zeros(b, 0, model.config.vocab_size)
    return LatentGeneration(tokens=tokens, latent_counts=counts.tolist(), logits=logits_t)


# ---------------------------------------------------------------------------------------------------------
# Artifact
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LatentStudent:
    """A trained latent student: the Student, how it reasons, and its halt head (adaptive students)."""

    model: Student
    spec: LatentSpec
    halt_head: HaltHead | None = None

    def generate(self, prompts: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                 max_new_tokens: int = 48) -> LatentGeneration:
        """:func:`generate_latent` with this student's spec."""
        return generate_latent(self.model, prompts, num_latents=self.spec.num_latents, eos_id=eos_id,
                               pad_id=pad_id, max_new_tokens=max_new_tokens, feedback=self.spec.feedback,
                               halt_head=self.halt_head, halt_threshold=self.spec.halt_threshold,
                               bot_id=self.spec.bot_id, eot_id=self.spec.eot_id)

    def generate_text(self, tokenizer: DistilleryTokenizer, prompts: Sequence[str], max_new_tokens: int = 48,
                      batch_size: int = 64) -> tuple[list[str], list[int], list[int]]:
        """Texts decoded after ``<eot>`` (eos dropped, special tokens kept), decoded token counts (eos
        included) and latent counts, for prompt strings."""
        texts: list[str] = []
        n_tokens: list[int] = []
        n_latents: list[int] = []
        for start in range(0, len(prompts), batch_size):
            chunk = [tokenizer.encode(p, add_bos=True) for p in prompts[start:start + batch_size]]
            gen = self.generate(chunk, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                                max_new_tokens=max_new_tokens)
            for row, count in zip(gen.tokens, gen.latent_counts, strict=True):
                n_tokens.append(len(row))
                n_latents.append(count)
                texts.append(tokenizer.decode([t for t in row if t != tokenizer.eos_id]))
        return texts, n_tokens, n_latents


def save_latent_student(student: LatentStudent, directory: str | Path, *, tokenizer: DistilleryTokenizer | None = None,
                        metrics: dict[str, Any] | None = None, card: dict[str, Any] | None = None) -> Path:
    """Write the Student artifact plus ``latent.json`` (the :class:`LatentSpec`) and the halt head's tensors
    (``latent_halt.*`` in ``model.safetensors``)."""
    extra = {HALT_PREFIX + k: v for k, v in student.halt_head.state_dict().items()} if student.halt_head else {}
    spec = json.dumps(student.spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return student.model.save_pretrained(directory, tokenizer=tokenizer, metrics=metrics, card=card,
                                         extra_files={LATENT_SPEC_FILE: spec.encode()}, extra_tensors=extra)


def load_latent_student(directory: str | Path) -> LatentStudent:
    """Load what :func:`save_latent_student` wrote (manifest verified)."""
    directory = Path(directory)
    spec_path = directory / LATENT_SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: {directory} is not a latent student")
    spec = LatentSpec.model_validate_json(spec_path.read_text())
    model = load_student(directory)
    halt = None
    tensors = extra_tensors(directory, HALT_PREFIX)
    if tensors:
        width = tensors[HALT_PREFIX + "net.0.weight"].shape[0]
        halt = HaltHead(model.config.hidden_size, width)
        halt.load_state_dict({k[len(HALT_PREFIX):]: v for k, v in tensors.items()})
        halt.eval()
    elif spec.adaptive:
        raise ValueError(f"{directory}: an adaptive latent student needs its halt head (latent_halt.* tensors)")
    return LatentStudent(model=model, spec=spec, halt_head=halt)
