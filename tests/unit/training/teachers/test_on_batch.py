"""TeacherOnBatch: one teacher forward serves targets and hidden states; packed rows get, at every position,
what the teacher computes for that token in its own example."""

from __future__ import annotations

import pytest
import torch
from kd_helpers import make_tiny_setup

from training.teachers.base import TeacherTargets
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.on_batch import TeacherOnBatch


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> CheckpointTeacher:
    paths = make_tiny_setup(tmp_path_factory.mktemp("on_batch"), n_train=4, n_val=2)
    return CheckpointTeacher(paths["teacher"])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def test_one_forward_gives_targets_and_hidden_states(teacher: CheckpointTeacher,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ids = torch.randint(5, teacher.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    want_logits = teacher.logits(ids)
    want_hidden = teacher.hidden_states(ids)
    calls = []
    run = teacher.model.run
    monkeypatch.setattr(teacher.model, "run", lambda *a, **k: calls.append(k) or run(*a, **k))
    got = TeacherOnBatch(teacher, pad_id=0).run(ids, None, targets=True, hidden_states=True)
    assert len(calls) == 1
    assert got.targets is not None and got.targets.logits is not None and got.hidden_states is not None
    assert _rel(got.targets.logits, want_logits) <= 1e-6
    assert len(got.hidden_states) == len(want_hidden)
    assert all(_rel(a, b) <= 1e-6 for a, b in zip(got.hidden_states, want_hidden, strict=True))
    assert got.final_hidden is None


def test_packed_rows_get_each_examples_own_outputs(teacher: CheckpointTeacher) -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(5, teacher.vocab_size, (5,), generator=gen), torch.randint(5, teacher.vocab_size, (3,),
                                                                                     generator=gen)
    packed = torch.cat([a, b, torch.zeros(2, dtype=torch.long)]).unsqueeze(0)  # (1, 10): a, b, padding
    seq = torch.tensor([[1] * 5 + [2] * 3 + [0] * 2])
    got = TeacherOnBatch(teacher, pad_id=0).run(packed, (seq != 0).long(), seq, targets=True, final_hidden=True)
    assert got.targets is not None and got.targets.logits is not None and got.final_hidden is not None
    assert _rel(got.targets.logits[0, :5], teacher.logits(a.unsqueeze(0))[0]) <= 1e-5
    assert _rel(got.targets.logits[0, 5:8], teacher.logits(b.unsqueeze(0))[0]) <= 1e-5
    assert _rel(got.final_hidden[0, 5:8], teacher.final_hidden(b.unsqueeze(0))[0]) <= 1e-5
    # the check can fail: b inside the packed row without the split would see a's tokens
    assert _rel(teacher.logits(packed)[0, 5:8], teacher.logits(b.unsqueeze(0))[0]) > 1e-3


class _TopKOnly:
    """A source with targets only (like an HTTP or cache teacher): no hidden states, no ``outputs``."""

    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TeacherTargets:
        ids = torch.stack([input_ids, input_ids + 1], dim=-1)
        return TeacherTargets(topk_ids=ids, topk_logprobs=torch.full(ids.shape, -0.7))


def test_sources_without_outputs_are_called_per_output() -> None:
    ids = torch.tensor([[3, 4, 5, 6]])
    seq = torch.tensor([[1, 1, 2, 2]])
    got = TeacherOnBatch(_TopKOnly(), pad_id=0).run(ids, None, seq, targets=True)
    assert got.targets is not None and got.targets.topk_ids is not None
    assert torch.equal(got.targets.topk_ids[0, :, 0], ids[0])
    assert TeacherOnBatch(_TopKOnly(), pad_id=0).run(ids, None).targets is None
