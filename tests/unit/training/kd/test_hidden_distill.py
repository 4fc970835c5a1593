"""The trainer with ``student_init`` and the hidden-state loss term: copy, brute-force term, logs, exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config
from safetensors.torch import load_file

from training.kd.config import KDConfig
from training.kd.trainer import KDTrainer
from training.model import Student
from training.model_config import ModelConfig
from training.student_init import StudentInitError
from training.teachers.base import TeacherTargets
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.tokenizer import DistilleryTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny KD setup with a 4-layer, 48-wide teacher (layers differ from each other)."""
    root = tmp_path_factory.mktemp("hidden")
    paths = make_tiny_setup(root, n_train=48, n_val=8, teacher=False)
    tok = DistilleryTokenizer.load(paths["tokenizer"])
    torch.manual_seed(321)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96)
    Student(cfg).save_pretrained(root / "teacher", tokenizer=tok)
    return {**paths, "teacher": root / "teacher"}


def _config(setup: dict[str, Path], out: Path, student: dict[str, Any] | None = None,
            **overrides: Any) -> KDConfig:
    """tiny_config with ``student`` replaced (not merged), so only the keys given here count as set."""
    data = tiny_config(setup, out, **overrides).model_dump(mode="json", exclude_unset=True)
    data["student"] = student or {}
    return KDConfig.model_validate(data)


_INIT = {"from_teacher": True, "layers": [1, 3]}


def test_trainer_copies_the_chosen_teacher_layers(setup: dict[str, Path], tmp_path: Path) -> None:
    trainer = KDTrainer(_config(setup, tmp_path / "run", student={"max_position_embeddings": 96},
                                student_init=_INIT))
    assert trainer.init_layers == [1, 3]
    teacher = load_file(str(setup["teacher"] / "model.safetensors"))
    state = trainer.student.state_dict()
    assert trainer.student.config.num_hidden_layers == 2 and trainer.student.config.hidden_size == 48
    assert torch.equal(state["model.layers.0.self_attn.q_proj.weight"], teacher["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(state["model.layers.1.mlp.down_proj.weight"], teacher["model.layers.3.mlp.down_proj.weight"])
    assert torch.equal(state["model.embed_tokens.weight"], teacher["model.embed_tokens.weight"])


def test_trainer_refuses_conflicting_student_keys(setup: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(setup, tmp_path / "run", student={"hidden_size": 32, "num_hidden_layers": 3},
                  student_init=_INIT)
    with pytest.raises(StudentInitError, match=r"student\.hidden_size=32.*student\.num_hidden_layers=3"):
        KDTrainer(cfg)


def _brute_force_hidden(trainer: KDTrainer, batch: dict[str, torch.Tensor], pairs: dict[int, int],
                        kind: str, normalizer: float) -> float:
    """Per token and per mapped layer pair, in plain loops: mean((s - t)^2) or 1 - cos(s, t), summed over target
    tokens, divided by the normalizer, averaged over pairs. ``pairs``: decoder-layer numbering."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        s_hidden = trainer.student.run(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        t_hidden = trainer.teacher.model.run(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert s_hidden is not None and t_hidden is not None
    target = batch["labels"] != -100
    per_pair = []
    for s, t in pairs.items():
        total = 0.0
        for b in range(ids.shape[0]):
            for pos in range(ids.shape[1]):
                if not target[b, pos]:
                    continue
                x, y = s_hidden[s + 1][b, pos].double(), t_hidden[t + 1][b, pos].double()
                if kind == "mse":
                    total += float(((x - y) ** 2).sum()) / x.numel()
                else:
                    total += 1.0 - float(x @ y) / float(x.norm() * y.norm())
        per_pair.append(total / normalizer)
    return sum(per_pair) / len(per_pair)


@pytest.mark.parametrize(("kind", "layer_map", "pairs"), [
    ("mse", None, {0: 1, 1: 3}),                 # default: where each student layer was copied from
    ("cosine", [[0, 0], [1, 2]], {0: 0, 1: 2}),
])
def test_hidden_term_equals_brute_force(setup: dict[str, Path], tmp_path: Path, kind: str,
                                        layer_map: list[list[int]] | None, pairs: dict[int, int]) -> None:
    loss_cfg = {"hidden_weight": 0.7, "hidden_kind": kind, "hidden_layer_map": layer_map}
    trainer = KDTrainer(_config(setup, tmp_path / "run", student_init=_INIT, loss=loss_cfg))
    batch = next(iter(trainer.stream))
    normalizer = float(batch["num_target_tokens"]) + 3.0  # a step-wide count, not the micro-batch's own
    loss, terms = trainer.micro_batch_loss(batch, normalizer=normalizer)
    want = _brute_force_hidden(trainer, batch, pairs, kind, normalizer)
    assert want > 0
    assert terms["hidden"] == pytest.approx(want, rel=1e-5)
    cfg = trainer.cfg.loss
    assert float(loss.detach()) == pytest.approx(cfg.ce_weight * terms["ce"] + cfg.kd_weight * terms["kd"]
                                        + 0.7 * terms["hidden"], rel=1e-6)


@pytest.mark.parametrize("batching", ["bucket", "pack"])
def test_hidden_term_is_zero_for_a_full_copy(setup: dict[str, Path], tmp_path: Path, batching: str) -> None:
    """All layers copied, identity map: student states equal the teacher's (packed rows too, whose teacher
    states come from one example a row and are merged back), so the term is ~0 relative to the states' scale."""
    trainer = KDTrainer(_config(setup, tmp_path / "run", student_init={"from_teacher": True, "every_k": 1},
                                data={"batching": batching}, loss={"hidden_weight": 1.0}))
    batch = next(iter(trainer.stream))
    _, terms = trainer.micro_batch_loss(batch, normalizer=float(batch["num_target_tokens"]))
    with torch.no_grad():
        scale = float(trainer.student.run(batch["input_ids"], output_hidden_states=True).hidden_states[-1]
                      .pow(2).mean())
    assert 0.0 <= terms["hidden"] < 1e-9 * scale


def test_chunked_path_adds_the_same_hidden_term(setup: dict[str, Path], tmp_path: Path) -> None:
    loss_cfg = {"hidden_weight": 0.5}
    plain = KDTrainer(_config(setup, tmp_path / "a", student_init=_INIT, loss=loss_cfg))
    chunked = KDTrainer(_config(setup, tmp_path / "b", student_init=_INIT,
                                loss={**loss_cfg, "chunked": True, "chunk_size": 16}))
    batch = next(iter(plain.stream))
    n = float(batch["num_target_tokens"])
    loss_a, terms_a = plain.micro_batch_loss(batch, normalizer=n)
    loss_b, terms_b = chunked.micro_batch_loss(batch, normalizer=n)
    assert terms_b["hidden"] == pytest.approx(terms_a["hidden"], rel=1e-6)
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-5)


def test_trainer_logs_the_term_and_resume_equals_uninterrupted(setup: dict[str, Path], tmp_path: Path) -> None:
    def cfg(out: Path) -> KDConfig:
        return _config(setup, out, student_init=_INIT, loss={"hidden_weight": 0.5}, optim={"max_steps": 6},
                       eval={"every": 3}, checkpoint={"every": 3})

    full = KDTrainer(cfg(tmp_path / "full")).train()
    part = KDTrainer(cfg(tmp_path / "split"), stop_after_steps=2).train()
    assert part.status == "stopped_early" and part.step == 2
    rest = KDTrainer(cfg(tmp_path / "split")).train()
    assert full.status == rest.status == "completed" and rest.step == 6
    a = load_file(str(full.student_dir / "model.safetensors"))  # type: ignore[operator]
    b = load_file(str(rest.student_dir / "model.safetensors"))  # type: ignore[operator]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [json.loads(x) for x in (tmp_path / "full" / "logs" / "train.jsonl").read_text().splitlines()]
    train = [rec for rec in lines if rec["event"] == "train"]
    assert len(train) == 6 and all(rec["hidden"] > 0 for rec in train)
    config = json.loads((full.student_dir / "config.json").read_text())  # type: ignore[operator]
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 48
    card = (full.student_dir / "README.md").read_text()  # type: ignore[operator]
    assert "student_init" in card and "[1, 3]" in card


class _NoHiddenTeacher:
    """A dense teacher without hidden states (as an HF or HTTP source would be)."""

    def __init__(self, inner: CheckpointTeacher) -> None:
        self.tokenizer, self.vocab_size, self._inner = inner.tokenizer, inner.vocab_size, inner

    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TeacherTargets:
        return self._inner.targets(input_ids, attention_mask)


def test_hidden_term_needs_hidden_states_and_equal_widths(setup: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(setup, tmp_path / "a", student_init=_INIT, loss={"hidden_weight": 1.0})
    with pytest.raises(ValueError, match="teacher with hidden states"):
        KDTrainer(cfg, teacher=_NoHiddenTeacher(CheckpointTeacher(setup["teacher"])))
    scratch = tiny_config(setup, tmp_path / "b", loss={"hidden_weight": 1.0})  # a 32-wide student
    with pytest.raises(ValueError, match=r"student.hidden_size \(32\).*\(48\)"):
        KDTrainer(scratch)
