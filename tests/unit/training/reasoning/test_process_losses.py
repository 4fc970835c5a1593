"""Process-supervision losses: the weighting scheme, every term against a brute-force loop, gradients to the
student (non-zero, and equal to central finite differences in float64), placement and split invariance."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from training.losses import KDLossWeights
from training.model import Student
from training.model_config import ModelConfig
from training.reasoning.process_losses import (
    ProcessTokenWeights,
    ProcessWeights,
    process_loss,
    process_token_weights,
    span_cross_entropy,
    span_token_weights,
    unlikelihood,
    weighted_cross_entropy,
    weighted_kd,
)
from training.reasoning.step_data import (
    KIND_ANSWER,
    KIND_STEP,
    KIND_TOOL_NAME,
    KIND_TOOL_STRUCTURE,
    StepEncoded,
    collate_steps,
    encode_steps,
)
from training.tasks import arithmetic, get_task
from training.tokenizer import DistilleryTokenizer

WEIGHTS = ProcessWeights(correct_weight=1.0, wrong_weight=0.5, answer_weight=2.0, unlikelihood_weight=0.3,
                         toolcall_name_weight=3.0, toolcall_structure_weight=1.5)


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids oversubscribing a shared machine (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def encoded(tiny_tokenizer: DistilleryTokenizer) -> list[StepEncoded]:
    """A clean and a corrupted arithmetic example, and a tool call."""
    clean = get_task("arithmetic").generate(3, 5)
    corrupted = arithmetic.corrupt(clean[2], random.Random(0))
    assert 0.0 in corrupted["step_labels"] and corrupted["step_labels"][0] == 1.0
    call = get_task("toolcall").generate(1, 2)[0]
    return [encode_steps(e, tiny_tokenizer, 128) for e in (clean[0], corrupted, call)]


@pytest.fixture(scope="module")
def batch(encoded: list[StepEncoded], tiny_tokenizer: DistilleryTokenizer) -> dict[str, Tensor]:
    return collate_steps(encoded, tiny_tokenizer.pad_id)


@pytest.fixture(scope="module")
def model64(tiny_config: ModelConfig) -> Student:
    """A tiny float64 student with an untied head (its parameters are exactly float64 after the final norm)."""
    torch.manual_seed(11)
    return Student(tiny_config).double().eval()


@pytest.fixture(scope="module")
def teacher_logits(batch: dict[str, Tensor], tiny_config: ModelConfig) -> Tensor:
    gen = torch.Generator().manual_seed(3)
    shape = (*batch["input_ids"].shape, tiny_config.vocab_size)
    return 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)


def token_weights_of(batch: dict[str, Tensor], weights: ProcessWeights = WEIGHTS) -> ProcessTokenWeights:
    return process_token_weights(batch["labels"], batch["step_weight"], batch["span_kind"], batch["step_index"],
                                 weights)


# ---- brute-force references ----------------------------------------------------------------------------------


def log_softmax_row(row: list[float], temperature: float = 1.0) -> list[float]:
    scaled = [x / temperature for x in row]
    top = max(scaled)
    lse = top + math.log(sum(math.exp(x - top) for x in scaled))
    return [x - lse for x in scaled]


def ref_weighted_ce(logits: Tensor, labels: Tensor, w: Tensor, eps: float, normalizer: float) -> float:
    total = 0.0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == -100 or float(w[b, t]) == 0:
                continue
            logq = log_softmax_row(logits[b, t].tolist())
            per = (1 - eps) * -logq[y] + eps * -sum(logq) / len(logq)
            total += float(w[b, t]) * per
    return total / max(normalizer, 1.0)


def ref_unlikelihood(logits: Tensor, labels: Tensor, w: Tensor, normalizer: float) -> float:
    total = 0.0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == -100 or float(w[b, t]) == 0:
                continue
            q = math.exp(log_softmax_row(logits[b, t].tolist())[y])
            total += float(w[b, t]) * -math.log(1.0 - q)
    return total / max(normalizer, 1.0)


def ref_forward_kl(student: Tensor, teacher: Tensor, w: Tensor, temperature: float, normalizer: float) -> float:
    total = 0.0
    for b in range(w.shape[0]):
        for t in range(w.shape[1]):
            if float(w[b, t]) == 0:
                continue
            logq = log_softmax_row(student[b, t].tolist(), temperature)
            logp = log_softmax_row(teacher[b, t].tolist(), temperature)
            kl = sum(math.exp(lp) * (lp - lq) for lp, lq in zip(logp, logq, strict=True))
            total += float(w[b, t]) * kl * temperature**2
    return total / max(normalizer, 1.0)


def ref_reverse_kl(student: Tensor, teacher: Tensor, w: Tensor, normalizer: float) -> float:
    total = 0.0
    for b in range(w.shape[0]):
        for t in range(w.shape[1]):
            if float(w[b, t]) == 0:
                continue
            logq = log_softmax_row(student[b, t].tolist())
            logp = log_softmax_row(teacher[b, t].tolist())
            total += float(w[b, t]) * sum(math.exp(lq) * (lq - lp) for lp, lq in zip(logp, logq, strict=True))
    return total / max(normalizer, 1.0)


def ref_sparse_kl(student: Tensor, ids: Tensor, logprobs: Tensor, w: Tensor, normalizer: float) -> float:
    total = 0.0
    for b in range(w.shape[0]):
        for t in range(w.shape[1]):
            if float(w[b, t]) == 0:
                continue
            logq = log_softmax_row(student[b, t].tolist())
            top = [int(i) for i in ids[b, t]]
            p = [math.exp(x) for x in logprobs[b, t].tolist()]
            tail_p = max(0.0, 1.0 - sum(p))
            q_top = [math.exp(logq[i]) for i in top]
            q_tail = sum(math.exp(x) for i, x in enumerate(logq) if i not in top)
            buckets_p, buckets_q = [*p, tail_p], [*q_top, q_tail]
            z = sum(buckets_p)
            kl = sum((pp / z) * (math.log(pp / z) - math.log(qq)) for pp, qq in zip(buckets_p, buckets_q, strict=True)
                     if pp > 1e-12)
            total += float(w[b, t]) * kl
    return total / max(normalizer, 1.0)


def ref_span_ce(logits: Tensor, input_ids: Tensor, spans: list[list[tuple[int, int]]],
                span_weights: list[list[float]], normalizer: float) -> float:
    total = 0.0
    for b, row in enumerate(spans):
        for (start, end), weight in zip(row, span_weights[b], strict=True):
            for token in range(start, end):
                if token >= input_ids.shape[1]:
                    continue
                logq = log_softmax_row(logits[b, token - 1].tolist())
                total += weight * -logq[int(input_ids[b, token])]
    return total / max(normalizer, 1.0)


def ref_token_weights(batch: dict[str, Tensor], weights: ProcessWeights) -> tuple[list, list, list]:
    """The scheme's table, position by position."""
    labels, score, kind, index = batch["labels"], batch["step_weight"], batch["span_kind"], batch["step_index"]
    c, w, a = weights.correct_weight, weights.wrong_weight, weights.answer_weight
    ce, kd, ul = [], [], []
    for b in range(labels.shape[0]):
        wrong_steps = sorted({int(index[b, t]) for t in range(labels.shape[1])
                              if int(kind[b, t]) == KIND_STEP and float(score[b, t]) < 1.0})
        ce.append([])
        kd.append([])
        ul.append([])
        for t in range(labels.shape[1]):
            s, k = float(score[b, t]), int(kind[b, t])
            if int(labels[b, t]) == -100:
                row = (0.0, 0.0, 0.0)
            elif k == KIND_STEP:
                penalised = s < 1.0 and (weights.unlikelihood_scope == "all_wrong"
                                         or int(index[b, t]) == wrong_steps[0])
                row = (c * s, c * s + w * (1 - s), (1 - s) if penalised else 0.0)
            elif k == KIND_ANSWER:
                row = (a * s, a * s + w * (1 - s), 0.0)
            elif k == KIND_TOOL_NAME:
                row = (weights.toolcall_name_weight,) * 2 + (0.0,)
            elif k == KIND_TOOL_STRUCTURE:
                row = (weights.toolcall_structure_weight,) * 2 + (0.0,)
            else:
                row = (1.0, 1.0, 0.0)
            ce[b].append(row[0])
            kd[b].append(row[1])
            ul[b].append(row[2])
    return ce, kd, ul


# ---- the weighting scheme ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["first_wrong", "all_wrong"])
@pytest.mark.parametrize("soft", [False, True])
def test_token_weights_follow_the_table(batch: dict[str, Tensor], scope: str, soft: bool) -> None:
    data = dict(batch)
    if soft:  # judge-like scores in (0, 1)
        gen = torch.Generator().manual_seed(0)
        step = data["span_kind"] == KIND_STEP
        data["step_weight"] = torch.where(step, torch.rand(step.shape, generator=gen), data["step_weight"])
    weights = WEIGHTS.model_copy(update={"unlikelihood_scope": scope})
    got = token_weights_of(data, weights)
    ce, kd, ul = ref_token_weights(data, weights)
    torch.testing.assert_close(got.ce, torch.tensor(ce), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.kd, torch.tensor(kd), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.unlikelihood, torch.tensor(ul), rtol=0, atol=1e-6)


def test_weights_land_on_the_right_positions(batch: dict[str, Tensor], encoded: list[StepEncoded]) -> None:
    """Corrupted row: CE weight 0 exactly on the label positions of wrong steps and of the (wrong) answer,
    KD weight = wrong_weight there, unlikelihood only on the first wrong step; tool row: name/structure weights."""
    got = token_weights_of(batch)
    row = encoded[1]
    first_wrong = row.step_scores.index(0.0)
    for k, span in enumerate(row.steps):
        positions = list(span.label_positions)
        wrong = row.step_scores[k] == 0.0
        assert torch.all(got.ce[1, positions] == (0.0 if wrong else 1.0))
        assert torch.all(got.kd[1, positions] == (0.5 if wrong else 1.0))
        assert torch.all(got.unlikelihood[1, positions] == (1.0 if k == first_wrong else 0.0))
    answer = list(row.answer.label_positions)
    assert torch.all(got.ce[1, answer] == 0.0) and torch.all(got.kd[1, answer] == 0.5)
    clean = encoded[0]
    assert torch.all(got.ce[0, list(clean.answer.label_positions)] == 2.0)
    assert float(got.unlikelihood[0].sum()) == 0.0
    call = encoded[2]
    assert torch.all(got.ce[2, list(call.tool_name.label_positions)] == 3.0)
    assert torch.all(got.ce[2, [t - 1 for t in call.tool_structure]] == 1.5)
    targets = batch["labels"] != -100
    assert torch.all(got.ce[~targets] == 0) and torch.all(got.kd[~targets] == 0)
    assert torch.all(got.ce >= 0) and torch.all(got.kd >= 0) and torch.all(got.unlikelihood >= 0)


def test_weights_config_is_validated(batch: dict[str, Tensor]) -> None:
    with pytest.raises(ValidationError):
        ProcessWeights(wrong_weight=-0.1)
    with pytest.raises(ValidationError):
        ProcessWeights(correct_weight=float("nan"))
    with pytest.raises(ValidationError):
        ProcessWeights(bogus=1.0)  # type: ignore[call-arg]
    bad = dict(batch)
    bad["step_weight"] = batch["step_weight"] * 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        token_weights_of(bad)
    with pytest.raises(ValueError, match="span_kind"):
        process_token_weights(batch["labels"], batch["step_weight"], batch["span_kind"][:, :3],
                              batch["step_index"], WEIGHTS)


# ---- each term against a brute-force loop --------------------------------------------------------------------


def student_logits(model: Student, batch: dict[str, Tensor]) -> Tensor:
    return model(batch["input_ids"], attention_mask=batch["attention_mask"])


def test_terms_match_brute_force(model64: Student, batch: dict[str, Tensor], teacher_logits: Tensor,
                                 encoded: list[StepEncoded]) -> None:
    with torch.no_grad():
        logits = student_logits(model64, batch)
    w = token_weights_of(batch)
    labels = batch["labels"]
    n = float(batch["num_target_tokens"])
    for eps in (0.0, 0.1):
        got = weighted_cross_entropy(logits, labels, w.ce, label_smoothing=eps, normalizer=n)
        assert float(got) == pytest.approx(ref_weighted_ce(logits, labels, w.ce, eps, n), rel=1e-10)
    got = unlikelihood(logits, labels, w.unlikelihood, normalizer=n)
    assert float(got) > 0
    assert float(got) == pytest.approx(ref_unlikelihood(logits, labels, w.unlikelihood, n), rel=1e-10)
    got = weighted_kd(logits, w.kd, teacher_logits=teacher_logits, temperature=2.0, normalizer=n)
    assert float(got) == pytest.approx(ref_forward_kl(logits, teacher_logits, w.kd, 2.0, n), rel=1e-10)
    got = weighted_kd(logits, w.kd, teacher_logits=teacher_logits, divergence="reverse_kl", normalizer=n)
    assert float(got) == pytest.approx(ref_reverse_kl(logits, teacher_logits, w.kd, n), rel=1e-10)
    top = torch.log_softmax(teacher_logits, -1).topk(6, dim=-1)
    got = weighted_kd(logits, w.kd, teacher_topk_ids=top.indices, teacher_topk_logprobs=top.values, normalizer=n)
    assert float(got) == pytest.approx(ref_sparse_kl(logits, top.indices, top.values, w.kd, n), rel=1e-8)
    spans = [[(s.start, s.end) for s in e.steps] for e in encoded]
    span_w = [list(e.step_scores) for e in encoded]
    got = span_cross_entropy(logits, batch["input_ids"], spans, span_w, normalizer=n)
    assert float(got) > 0
    assert float(got) == pytest.approx(ref_span_ce(logits, batch["input_ids"], spans, span_w, n), rel=1e-10)
    loss = KDLossWeights(kd=0.7, ce=0.4, temperature=2.0, label_smoothing=0.1)
    total, terms = process_loss(logits, labels, w, loss, 0.3, teacher_logits=teacher_logits, normalizer=n)
    expected = (0.7 * ref_forward_kl(logits, teacher_logits, w.kd, 2.0, n)
                + 0.4 * ref_weighted_ce(logits, labels, w.ce, 0.1, n)
                + 0.3 * ref_unlikelihood(logits, labels, w.unlikelihood, n))
    assert float(total) == pytest.approx(expected, rel=1e-10)
    assert terms["total"] == pytest.approx(expected, rel=1e-10)
    assert terms["kd"] > 0 and terms["ce"] > 0 and terms["unlikelihood"] > 0


def test_span_loss_equals_weighted_ce_on_the_collated_labels(model64: Student, batch: dict[str, Tensor],
                                                             encoded: list[StepEncoded]) -> None:
    """Spans scored from input_ids (with the shift) give the same loss as the step-weighted CE on the
    already-shifted labels: the spans sit on the right positions."""
    with torch.no_grad():
        logits = student_logits(model64, batch)
    spans = [[*e.steps, *([e.answer] if e.answer else [])] for e in encoded]
    span_w = [[*e.step_scores, *([e.answer_score] if e.answer else [])] for e in encoded]
    from_spans = span_cross_entropy(logits, batch["input_ids"], spans, span_w, normalizer=50)
    kinds = batch["span_kind"]
    mask = ((kinds == KIND_STEP) | (kinds == KIND_ANSWER)).double() * batch["step_weight"].double()
    from_labels = weighted_cross_entropy(logits, batch["labels"], mask, normalizer=50)
    assert float(from_spans) == pytest.approx(float(from_labels), rel=1e-12)
    placed = span_token_weights(spans, tuple(batch["input_ids"].shape), span_w)
    torch.testing.assert_close(placed.double(), mask)
    shifted = span_token_weights([[(s.start + 1, s.end + 1) for s in row] for row in spans],
                                 tuple(batch["input_ids"].shape), span_w)
    assert not torch.equal(shifted.double(), mask)


# ---- gradients ------------------------------------------------------------------------------------------------

Term = Callable[[Tensor], Tensor]


def terms_for(batch: dict[str, Tensor], teacher_logits: Tensor, encoded: list[StepEncoded]) -> dict[str, Term]:
    w = token_weights_of(batch)
    labels, n = batch["labels"], float(batch["num_target_tokens"])
    top = torch.log_softmax(teacher_logits, -1).topk(6, dim=-1)
    spans = [[(s.start, s.end) for s in e.steps] for e in encoded]
    span_w = [list(e.step_scores) for e in encoded]
    tool_only = torch.zeros_like(w.ce)
    tool_only[2] = w.ce[2]
    loss = KDLossWeights(kd=0.7, ce=0.4, temperature=1.5)
    return {
        "weighted_ce": lambda lg: weighted_cross_entropy(lg, labels, w.ce, 0.05, n),
        "weighted_kd": lambda lg: weighted_kd(lg, w.kd, teacher_logits=teacher_logits, temperature=1.5,
                                              normalizer=n),
        "weighted_kd_sparse": lambda lg: weighted_kd(lg, w.kd, teacher_topk_ids=top.indices,
                                                     teacher_topk_logprobs=top.values, normalizer=n),
        "unlikelihood": lambda lg: unlikelihood(lg, labels, w.unlikelihood, n),
        "span_ce": lambda lg: span_cross_entropy(lg, batch["input_ids"], spans, span_w, n),
        "toolcall_ce": lambda lg: weighted_cross_entropy(lg, labels, tool_only, 0.0, n),
        "process_total": lambda lg: process_loss(lg, labels, w, loss, 0.3, teacher_logits=teacher_logits,
                                                 normalizer=n)[0],
    }


TERM_NAMES = ["weighted_ce", "weighted_kd", "weighted_kd_sparse", "unlikelihood", "span_ce", "toolcall_ce",
              "process_total"]


@pytest.mark.parametrize("name", TERM_NAMES)
def test_term_gradient_reaches_the_student_and_matches_finite_differences(
        name: str, model64: Student, batch: dict[str, Tensor], teacher_logits: Tensor,
        encoded: list[StepEncoded]) -> None:
    term = terms_for(batch, teacher_logits, encoded)[name]
    model64.zero_grad(set_to_none=True)
    value = term(student_logits(model64, batch))
    assert value.dtype == torch.float64 and float(value.detach()) > 0
    value.backward()
    head = model64.lm_head.weight
    assert head.grad is not None and float(head.grad.abs().sum()) > 0
    embed = model64.model.embed_tokens.weight.grad
    deep = model64.model.layers[0].mlp.down_proj.weight.grad
    assert embed is not None and float(embed.abs().sum()) > 0  # it reaches the bottom of the network
    assert deep is not None and float(deep.abs().sum()) > 0
    # central finite differences on the head (after the final norm the student is exactly float64)
    labels = batch["labels"]
    rows = sorted({int(x) for x in labels[labels != -100].tolist()})[:3] + [int(head.shape[0]) - 1]
    step = 1e-6
    for r in rows:
        for c in (0, 7):
            original = float(head.data[r, c])
            with torch.no_grad():
                head.data[r, c] = original + step
                up = float(term(student_logits(model64, batch)))
                head.data[r, c] = original - step
                down = float(term(student_logits(model64, batch)))
                head.data[r, c] = original
            numeric = (up - down) / (2 * step)
            assert float(head.grad[r, c]) == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, r, c)


def test_wrong_step_positions_get_no_ce_gradient(model64: Student, batch: dict[str, Tensor],
                                                 teacher_logits: Tensor, encoded: list[StepEncoded]) -> None:
    logits = student_logits(model64, batch).detach().requires_grad_(True)
    w = token_weights_of(batch)
    ce = weighted_cross_entropy(logits, batch["labels"], w.ce, normalizer=40)
    (grad,) = torch.autograd.grad(ce, logits)
    row = encoded[1]
    for k, span in enumerate(row.steps):
        norms = grad[1, list(span.label_positions)].abs().sum(-1)
        if row.step_scores[k] == 0.0:
            assert torch.all(norms == 0)
        else:
            assert torch.all(norms > 0)
    ul = unlikelihood(logits, batch["labels"], w.unlikelihood, normalizer=40)
    (grad,) = torch.autograd.grad(ul, logits)
    first_wrong = row.step_scores.index(0.0)
    touched = {t for t in range(grad.shape[1]) if float(grad[1, t].abs().sum()) > 0}
    assert touched == set(row.steps[first_wrong].label_positions)
    assert float(grad[0].abs().sum()) == 0 and float(grad[2].abs().sum()) == 0


def test_micro_batch_split_invariance(model64: Student, batch: dict[str, Tensor], teacher_logits: Tensor) -> None:
    """With the step's token count as the normalizer, the weighted loss and its gradient are the sums over
    micro-batches, however the batch is split."""
    n = float(batch["num_target_tokens"])
    loss = KDLossWeights(kd=1.0, ce=0.5)

    def run(rows: slice) -> tuple[float, Tensor]:
        part = {k: (v[rows] if v.dim() else v) for k, v in batch.items()}
        model64.zero_grad(set_to_none=True)
        total, _ = process_loss(student_logits(model64, part), part["labels"], token_weights_of(part), loss, 0.3,
                                teacher_logits=teacher_logits[rows], normalizer=n)
        total.backward()
        return float(total.detach()), model64.lm_head.weight.grad.clone()

    full_value, full_grad = run(slice(0, 3))
    for parts in ([slice(0, 1), slice(1, 3)], [slice(0, 2), slice(2, 3)], [slice(0, 1), slice(1, 2), slice(2, 3)]):
        results = [run(p) for p in parts]
        assert sum(v for v, _ in results) == pytest.approx(full_value, rel=1e-10)
        torch.testing.assert_close(sum(g for _, g in results), full_grad, rtol=1e-8, atol=1e-12)


def test_edge_cases_are_finite() -> None:
    logits = torch.zeros(1, 3, 5, dtype=torch.float64)
    logits[0, 0, 2] = 1e4  # q(2) rounds to 1 at position 0
    logits.requires_grad_(True)
    labels = torch.tensor([[2, 1, -100]])
    ul = unlikelihood(logits, labels, torch.tensor([[1.0, 1.0, 5.0]]))
    assert math.isfinite(float(ul.detach())) and float(ul.detach()) > 1e3
    ul.backward()
    assert torch.isfinite(logits.grad).all()
    empty = torch.zeros(1, 3)
    for value in (weighted_cross_entropy(logits, labels, empty), unlikelihood(logits, labels, empty)):
        assert float(value.detach()) == 0.0
    total, terms = process_loss(logits, labels, ProcessTokenWeights(empty, empty, empty), KDLossWeights(kd=0, ce=1))
    total.backward()
    assert float(total.detach()) == 0.0 and terms["ce"] == 0.0
    with pytest.raises(ValueError, match="teacher"):
        weighted_kd(logits, None)
    with pytest.raises(ValueError, match="forward_kl"):
        weighted_kd(logits, None, teacher_topk_ids=torch.zeros(1, 3, 2, dtype=torch.long),
                    teacher_topk_logprobs=torch.zeros(1, 3, 2), divergence="jsd")
    with pytest.raises(ValueError, match="hidden"):
        process_loss(logits, labels, ProcessTokenWeights(empty, empty, empty), KDLossWeights(kd=0, ce=1, hidden=1))
    with pytest.raises(ValueError, match="spans"):
        span_token_weights([[(1, 2)]], (2, 3))
