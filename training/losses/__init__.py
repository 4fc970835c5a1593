"""Losses of the KD trainer. The public API is re-exported here from :mod:`~training.losses.kd`.

Modules: :mod:`~training.losses.kd` (divergences, cross-entropy, hidden-state loss, the combined KD loss and
its weights; the conventions shared by every token-level loss are documented there; also the small helpers
the other loss modules share: compute dtype, label checks, per-token cross-entropy, weighted reduction),
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
    as_compute,
    check_labels,
    check_unit_interval,
    combined_kd_loss,
    connected_zero,
    cross_entropy,
    cross_entropy_per_token,
    divergence_kwargs,
    forward_kl,
    generalized_jsd,
    hidden_state_loss,
    kd_divergence,
    reduce_weighted,
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
    "as_compute",
    "check_labels",
    "check_unit_interval",
    "combined_kd_loss",
    "connected_zero",
    "cross_entropy",
    "cross_entropy_per_token",
    "divergence_kwargs",
    "forward_kl",
    "generalized_jsd",
    "hidden_state_loss",
    "kd_divergence",
    "reduce_weighted",
    "resolve_normalizer",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "sparse_topk_kl",
    "token_weights",
    "uniform_layer_map",
]
