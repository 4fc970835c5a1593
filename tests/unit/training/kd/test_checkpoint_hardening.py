"""Checkpoints under damage, crashes and divergence (issue 16): progress is never lost, messages are true.

* all checkpoints damaged: the new, lower-numbered checkpoint must survive pruning (it used to be deleted
  as soon as it was written, while the damaged higher-numbered ones were kept), and "checkpoint written"
  is said only of a checkpoint that verifies;
* a crash mid-write left ``.step-*.tmp-*`` directories with full weights forever;
* a diverged run saved an all-NaN "last good state".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config

from training.artifact import ArtifactError, remove_stale_temporaries, verify_manifest, write_artifact
from training.distill_kd import run_and_report
from training.kd.checkpoint import (
    DamagedCheckpointWarning,
    NonFiniteStateError,
    latest_valid_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from training.kd.trainer import KDTrainer, TrainerHook, TrainingDiverged, TrainResult
from training.model import Student
from training.model_config import ModelConfig

STEP = re.compile(r"step-\d{8}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_setup(tmp_path_factory.mktemp("kd"))


def _model() -> tuple[Student, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Student(ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(root: Path, step: int, keep_last: int = 2) -> Path:
    model, optimizer = _model()
    return save_checkpoint(root, step, model, optimizer, {"note": "test"}, keep_last)


def _damage(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


# ---- pruning ranks by validity and recency ----------------------------------------------------------------
def test_new_checkpoint_survives_when_all_older_ones_are_damaged(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for path in [_save(root, 100), _save(root, 200)]:
        _damage(path)
    with pytest.warns(DamagedCheckpointWarning):
        assert latest_valid_checkpoint(root) is None  # a fresh run starts at 0 ...
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = _save(root, 5)
    moved = [str(w.message) for w in caught if issubclass(w.category, DamagedCheckpointWarning)]
    assert len(moved) == 2 and all("moved it to" in m for m in moved)
    verify_manifest(written)  # ... and its first checkpoint is kept, the damaged ones are moved aside
    assert _names(root) == ["step-00000005", "step-00000100.damaged", "step-00000200.damaged"]
    assert latest_valid_checkpoint(root) == written
    _save(root, 10)
    _save(root, 15)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000010", "step-00000015"]


def test_higher_numbered_checkpoints_of_another_timeline_rank_older(tmp_path: Path) -> None:
    """A valid step-100 left by an earlier run (resume=never, or resumed from before it) is older than what
    this run writes: it never displaces this run's checkpoints."""
    root = tmp_path / "checkpoints"
    _save(root, 100)
    _save(root, 5)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000005", "step-00000100"]
    _save(root, 10)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000005", "step-00000010"]


def test_protected_and_keep_last_one(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    model, optimizer = _model()
    for step in (1, 2, 3):
        save_checkpoint(root, step, model, optimizer, {}, keep_last=1, protect={"step-00000001"})
    assert [p.name for p in list_checkpoints(root)] == ["step-00000001", "step-00000003"]


def test_a_checkpoint_that_does_not_verify_after_writing_is_an_error(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import training.kd.checkpoint as checkpoint

    def flaky_write(directory: Path, populate: object) -> Path:
        path = write_artifact(directory, populate)  # type: ignore[arg-type]
        _damage(path)  # the disk returned something else than was written
        return path

    monkeypatch.setattr(checkpoint, "write_artifact", flaky_write)
    with pytest.warns(DamagedCheckpointWarning), pytest.raises(ArtifactError, match="did not verify"):
        _save(tmp_path / "checkpoints", 3)
    assert _names(tmp_path / "checkpoints") == ["step-00000003.damaged"]


def test_non_finite_state_is_never_written(tmp_path: Path) -> None:
    model, optimizer = _model()
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    with pytest.raises(NonFiniteStateError, match="model.norm.weight"):
        save_checkpoint(tmp_path / "checkpoints", 1, model, optimizer, {}, keep_last=2)
    model, optimizer = _model()
    next(iter(optimizer.state.values()))["exp_avg_sq"].fill_(float("inf"))
    with pytest.raises(NonFiniteStateError, match="exp_avg_sq"):
        save_checkpoint(tmp_path / "checkpoints", 1, model, optimizer, {}, keep_last=2)
    assert list_checkpoints(tmp_path / "checkpoints") == []


# ---- the trainer: SIGTERM over damaged checkpoints, divergence with NaN weights ------------------------------
class _SigtermAtStep(TrainerHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_after_all_checkpoints_were_damaged_keeps_progress(setup: dict[str, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(setup, tmp_path / "run", checkpoint={"every": 4, "keep_last": 2})
    KDTrainer(cfg).train()
    root = tmp_path / "run" / "checkpoints"
    for path in list_checkpoints(root):
        _damage(path)
    with pytest.warns(DamagedCheckpointWarning):
        trainer = KDTrainer(cfg, hooks=[_SigtermAtStep(2)])
        assert run_and_report(trainer.train) == 130
    assert "checkpoint written: " in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002"]
    assert sorted(p.name for p in root.glob("*.damaged")) == ["step-00000004.damaged", "step-00000008.damaged"]
    again = KDTrainer(cfg)
    assert again.maybe_resume() == root / "step-00000002" and again.step == 2


def test_interrupt_message_is_true(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"checkpoint written" only for a checkpoint of the interrupted step that verifies now."""
    path = _save(tmp_path / "checkpoints", 7)
    result = TrainResult(step=7, status="interrupted", checkpoint=path)
    assert run_and_report(lambda: result) == 130
    assert "checkpoint written: " in capsys.readouterr().err
    for stale in (TrainResult(step=9, status="interrupted", checkpoint=path),
                  TrainResult(step=7, status="interrupted", checkpoint=None)):
        assert run_and_report(lambda stale=stale: stale) == 130
        err = capsys.readouterr().err
        assert "checkpoint written" not in err and "no checkpoint of step" in err
    _damage(path)
    assert run_and_report(lambda: result) == 130
    assert "checkpoint written" not in capsys.readouterr().err


class _PoisonWeights(TrainerHook):
    """What ``optim.lr=inf`` does: the weights themselves become NaN (and so every loss after them)."""

    def on_train_start(self, trainer: KDTrainer) -> None:
        with torch.no_grad():
            trainer.student.model.norm.weight.fill_(float("nan"))


def test_diverged_run_does_not_save_non_finite_last_good_state(setup: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(setup, tmp_path / "run", max_nonfinite_steps=2)
    with pytest.warns(RuntimeWarning, match="NaN/inf"), \
            pytest.raises(TrainingDiverged, match="no checkpoint was written") as info:
        KDTrainer(cfg, hooks=[_PoisonWeights()]).train()
    assert "last good state saved" not in str(info.value)
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


# ---- stale temporaries of crashed writes --------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tmp(root: Path, name: str, age_s: float = 0.0) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x" * 1000)
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_a_killed_checkpoint_write_is_cleaned_up(tmp_path: Path) -> None:
    """A process killed in the middle of write_artifact leaves a temporary named with its pid; it goes."""
    root = tmp_path / "checkpoints"
    code = ("import os, sys; from pathlib import Path; from training.artifact import write_artifact\n"
            "def populate(tmp):\n    (tmp / 'model.safetensors').write_bytes(b'w' * 4096); os._exit(9)\n"
            f"write_artifact(Path({str(root / 'step-00000004')!r}), populate)\n")
    subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).resolve().parents[4])
    left = list(root.glob(".step-00000004.tmp-*"))
    assert len(left) == 1 and (left[0] / "model.safetensors").is_file()
    assert remove_stale_temporaries(root, STEP, started_at=time.time()) == left
    assert not left[0].exists()


def test_only_stale_temporaries_of_ours_are_removed(tmp_path: Path) -> None:
    root = tmp_path
    started = time.time()
    dead, me = _dead_pid(), os.getpid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [_tmp(root, f".step-00000001.tmp-{dead}-ab12cd34"),
                _tmp(root, f".step-00000002.tmp-{me}-ab12cd34", age_s=60),
                _tmp(root, ".step-00000003.tmp-ab12cd34", age_s=60),  # older Distillery: no pid in the name
                _tmp(root, f".step-00000004.old-{dead}")]
        (root / "step-00000004").mkdir()
        kept = [_tmp(root, f".step-00000005.tmp-{live.pid}-ab12cd34", age_s=60),  # a live writer
                _tmp(root, f".step-00000006.tmp-{me}-ab12cd34"),  # ours, newer than the start
                _tmp(root, ".step-00000007.tmp-ab12cd34"),
                _tmp(root, f".step-1.tmp-{dead}-ab12cd34"),  # not a checkpoint name
                _tmp(root, f".best.tmp-{dead}-ab12cd34"),
                _tmp(root, f".step-00000008.tmp-{dead}"),  # not write_artifact's pattern
                _tmp(root, "step-00000009")]
        (root / f".step-00000010.tmp-{dead}-ab12cd34").write_text("a file, not a directory")
        removed = remove_stale_temporaries(root, STEP, started_at=started)
        assert sorted(removed) == sorted(gone)
        assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
        assert (root / "step-00000004").is_dir() and (root / f".step-00000010.tmp-{dead}-ab12cd34").is_file()
    finally:
        live.kill()
        live.wait()


def test_old_copy_is_restored_when_the_crash_came_between_the_renames(tmp_path: Path) -> None:
    backup = _tmp(tmp_path, f".step-00000004.old-{_dead_pid()}")
    with pytest.warns(UserWarning, match="restored"):
        remove_stale_temporaries(tmp_path, STEP, started_at=time.time())
    assert not backup.exists() and (tmp_path / "step-00000004" / "model.safetensors").is_file()


def test_trainer_cleans_stale_temporaries_at_start(setup: dict[str, Path], tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = [_tmp(tmp_path / "run" / "checkpoints", f".step-00000004.tmp-{dead}-ab12cd34"),
             _tmp(tmp_path / "run", f".best.tmp-{dead}-ab12cd34")]
    result = KDTrainer(tiny_config(setup, tmp_path / "run"), stop_after_steps=1).train()
    assert result.status == "stopped_early"
    assert not any(p.exists() for p in stale)
    log = (tmp_path / "run" / "logs" / "train.jsonl").read_text()
    assert f".step-00000004.tmp-{dead}-ab12cd34" in log
