"""Losses of the KD trainer. The public API is re-exported here from :mod:`~training.losses.kd`.

Modules: :mod:`~training.losses.kd` (divergences, cross-entropy, hidden-state loss, the combined KD loss and
its weights; the conventions shared by every token-level loss are documented there),
:mod:`~training.losses.sparse_kd_ce` (fused KD + CE over a sparse top-k teacher),
:mod:`~training.losses.chunked` (the same losses over sequence chunks, without materializing ``(N, V)``
logits). The process (per-step) losses of the reasoning pipeline live in :mod:`training.reasoning.process_losses`.
"""

from training.losses.kd import (
    DIVERGENCES,
    IGNORE_INDEX,
    DivergenceName,
    HiddenLossKind,
    HiddenProjector,
    KDLossWeights,
    Normalizer,
    combined_kd_loss,
    cross_entropy,
    divergence_kwargs,
    forward_kl,
    generalized_jsd,
    hidden_state_loss,
    kd_divergence,
    resolve_normalizer,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    sparse_topk_kl,
    token_weights,
    uniform_layer_map,
)

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "DivergenceName",
    "HiddenLossKind",
    "HiddenProjector",
    "KDLossWeights",
    "Normalizer",
    "combined_kd_loss",
    "cross_entropy",
    "divergence_kwargs",
    "forward_kl",
    "generalized_jsd",
    "hidden_state_loss",
    "kd_divergence",
    "resolve_normalizer",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "sparse_topk_kl",
    "token_weights",
    "uniform_layer_map",
]
