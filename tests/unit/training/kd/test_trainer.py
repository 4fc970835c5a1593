"""KD trainer behaviour: exact resume, split invariance, interrupts, non-finite steps, config and vocab errors."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config
from safetensors.torch import load_file

from training.artifact import verify_manifest
from training.kd.checkpoint import list_checkpoints
from training.kd.config import ConfigFileError, load_config
from training.kd.trainer import KDTrainer, ResumeMismatchError, TrainerHook, TrainingDiverged
from training.teachers.base import VocabularyMismatchError
from training.tokenizer import DistilleryTokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_setup(tmp_path_factory.mktemp("kd"))


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_run_writes_complete_artifact_and_logs(setup: dict[str, Path], tmp_path: Path) -> None:
    """A KD run ends with a verified student artifact, JSON-lines logs with a run id, and eval metrics."""
    result = KDTrainer(tiny_config(setup, tmp_path / "run")).train()
    assert result.status == "completed" and result.step == 8
    assert result.student_dir is not None
    verify_manifest(result.student_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json"):
        assert (result.student_dir / name).is_file()
    lines = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train.jsonl").read_text().splitlines()]
    assert {rec["run_id"] for rec in lines} == {lines[0]["run_id"]}
    train_steps = [rec["step"] for rec in lines if rec["event"] == "train"]
    assert train_steps == list(range(1, 9))
    evals = [rec for rec in lines if rec["event"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8]
    assert {"val_loss", "kd_loss", "top1_agreement", "accuracy"} <= set(evals[-1])
    assert 0.0 <= evals[-1]["top1_agreement"] <= 1.0
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    first, last = [rec["loss"] for rec in lines if rec["event"] == "train"][::7]
    assert last < first  # it learns something


def test_resume_equals_uninterrupted(setup: dict[str, Path], tmp_path: Path) -> None:
    """Stopping after 3 steps and resuming gives bit-identical final weights to an uninterrupted run."""
    full = KDTrainer(tiny_config(setup, tmp_path / "full")).train()
    part = KDTrainer(tiny_config(setup, tmp_path / "split"), stop_after_steps=3).train()
    assert part.status == "stopped_early" and part.step == 3
    assert part.student_dir is None
    rest = KDTrainer(tiny_config(setup, tmp_path / "split")).train()
    assert rest.status == "completed" and rest.step == 8
    a, b = _weights(full.student_dir), _weights(rest.student_dir)  # type: ignore[arg-type]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_gradient_accumulation_matches_one_big_batch(setup: dict[str, Path], tmp_path: Path) -> None:
    """Batch 8 x 1 micro-batch and batch 4 x 2 micro-batches (same examples) give the same update."""
    big = KDTrainer(tiny_config(setup, tmp_path / "big", data={"batch_size": 8}, optim={"max_steps": 1}))
    small = KDTrainer(tiny_config(setup, tmp_path / "small", data={"batch_size": 4},
                                  optim={"max_steps": 1, "grad_accum": 2}))
    small.student.load_state_dict(big.student.state_dict())
    batch = next(iter(big.stream))
    halves = [{k: (v[:4] if v.dim() else v) for k, v in batch.items()},
              {k: (v[4:] if v.dim() else v) for k, v in batch.items()}]
    for half in halves:
        half["num_target_tokens"] = (half["labels"] != -100).sum()
    ok_big, terms_big = big.train_step([batch])
    ok_small, terms_small = small.train_step(halves)
    assert ok_big and ok_small
    assert terms_big["loss"] == pytest.approx(terms_small["loss"], rel=1e-5)
    assert terms_big["grad_norm"] == pytest.approx(terms_small["grad_norm"], rel=1e-4)
    for (name, p), q in zip(big.student.named_parameters(), small.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


class _InterruptAtStep(TrainerHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_writes_checkpoint_and_resumes(setup: dict[str, Path], tmp_path: Path) -> None:
    """SIGINT mid-run finishes the step, writes a verified checkpoint, and the run resumes from it."""
    assert threading.current_thread() is threading.main_thread()
    cfg = tiny_config(setup, tmp_path / "run", checkpoint={"every": 100})
    result = KDTrainer(cfg, hooks=[_InterruptAtStep(2)]).train()
    assert result.status == "interrupted" and result.step == 2
    checkpoints = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [c.name for c in checkpoints] == ["step-00000002"]
    verify_manifest(checkpoints[0])
    again = KDTrainer(cfg).train()
    assert again.status == "completed" and again.step == 8


def test_resume_refuses_changed_locked_key(setup: dict[str, Path], tmp_path: Path) -> None:
    """A resumed run with a different max_length is refused with a message naming the key."""
    KDTrainer(tiny_config(setup, tmp_path / "run"), stop_after_steps=2).train()
    changed = tiny_config(setup, tmp_path / "run", data={"max_length": 80})
    with pytest.raises(ResumeMismatchError, match="data.max_length"):
        KDTrainer(changed).train()


class _PoisonLoss(TrainerHook):
    """Makes every loss NaN from the first step on (bad data, say); the weights stay finite."""

    def on_train_start(self, trainer: KDTrainer) -> None:
        plain = trainer.micro_batch_loss

        def poisoned(batch: dict[str, torch.Tensor], normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
            loss, terms = plain(batch, normalizer)
            return loss * float("nan"), terms

        trainer.micro_batch_loss = poisoned  # type: ignore[method-assign]


def test_repeated_nonfinite_losses_stop_with_checkpoint(setup: dict[str, Path], tmp_path: Path) -> None:
    """Non-finite losses skip the update; after max_nonfinite_steps the run stops with a checkpoint."""
    cfg = tiny_config(setup, tmp_path / "run", max_nonfinite_steps=2)
    trainer = KDTrainer(cfg, hooks=[_PoisonLoss()])
    with pytest.raises(TrainingDiverged, match="non-finite"):
        trainer.train()
    assert trainer.step == 0
    assert [c.name for c in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-00000000"]


def test_nonfinite_step_leaves_weights_untouched(setup: dict[str, Path], tmp_path: Path) -> None:
    """A step whose loss is NaN does not change any parameter or optimizer state."""
    trainer = KDTrainer(tiny_config(setup, tmp_path / "run"))
    batch = next(iter(trainer.stream))
    with torch.no_grad():
        trainer.student.lm_head.weight[0, 0] = float("inf")
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    finite, _ = trainer.train_step([batch])
    assert not finite
    for key, value in trainer.student.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not trainer.optimizer.state


def test_vocabulary_mismatch_is_an_error(setup: dict[str, Path], tmp_path: Path) -> None:
    """A student tokenizer that differs from the teacher's is refused, naming the difference."""
    other = DistilleryTokenizer.train(["completely different text " * 40], vocab_size=290)
    other.save(tmp_path / "other_tok")
    cfg = tiny_config(setup, tmp_path / "run", tokenizer=str(tmp_path / "other_tok"))
    with pytest.raises(VocabularyMismatchError, match="vocab size"):
        KDTrainer(cfg)


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    """Misspelled keys in YAML or overrides are rejected with the key's path."""
    path = tmp_path / "c.yaml"
    path.write_text("out_dir: x\ntokenizer: t\ndata: {train: [a.jsonl], batchsize: 4}\n")
    with pytest.raises(ConfigFileError, match="data.batchsize"):
        load_config(path)
    path.write_text("out_dir: x\ntokenizer: t\ndata: {train: [a.jsonl]}\n")
    assert load_config(path, ["optim.lr=0.5", "loss.temperature=2"]).optim.lr == 0.5
    with pytest.raises(ConfigFileError, match="optim.lrr"):
        load_config(path, ["optim.lrr=0.5"])
    with pytest.raises(ConfigFileError, match="key.path=value"):
        load_config(path, ["optim.lr"])


def test_scratch_training_without_teacher(setup: dict[str, Path], tmp_path: Path) -> None:
    """Without a teacher the same loop trains with cross-entropy only (no kd terms logged)."""
    paths = {k: v for k, v in setup.items() if k != "teacher"}
    result = KDTrainer(tiny_config(paths, tmp_path / "run")).train()
    assert result.status == "completed"
    lines = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train.jsonl").read_text().splitlines()]
    train = [rec for rec in lines if rec["event"] == "train"]
    assert all("kd" not in rec and "ce" in rec for rec in train)
    assert "top1_agreement" not in result.metrics


def test_chunked_loss_matches_plain_loss_in_trainer(setup: dict[str, Path], tmp_path: Path) -> None:
    """loss.chunked=true gives the same first-step loss and update as the plain path."""
    plain = KDTrainer(tiny_config(setup, tmp_path / "a", optim={"max_steps": 1}))
    chunked = KDTrainer(tiny_config(setup, tmp_path / "b", optim={"max_steps": 1},
                                    loss={"chunked": True, "chunk_size": 16}))
    chunked.student.load_state_dict(plain.student.state_dict())
    batch = next(iter(plain.stream))
    _, t1 = plain.train_step([batch])
    _, t2 = chunked.train_step([batch])
    assert t1["loss"] == pytest.approx(t2["loss"], rel=1e-5)
    # Adam's first step moves each parameter by about lr * g / (|g| + eps): the scale differences are judged
    # against is lr, not 1 (an absolute 1e-6 failed on another CPU at 1.28e-6).
    lr = plain.cfg.optim.lr
    for p, q in zip(plain.student.parameters(), chunked.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-3 * lr)
