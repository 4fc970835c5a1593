"""Pickle-free training checkpoints for exact resume.

A checkpoint is an artifact directory (atomic write, sha256 manifest) holding ``model.safetensors``,
``optimizer.safetensors`` (every optimizer tensor), ``config.json`` and ``trainer_state.json`` (step,
optimizer hyper-parameters, RNG states, data position, best metric, config fingerprint). Nothing is
unpickled on load, so a checkpoint from elsewhere cannot run code.

Progress is never lost to housekeeping: a checkpoint is verified against its manifest right after it is
written; pruning keeps the one just written whatever the others' step numbers, counts only checkpoints that
verify, and moves damaged ones aside (``step-XXXXXXXX.damaged``, with a warning) instead of keeping them in
place of good ones. :func:`remove_stale_checkpoint_temporaries` clears what a crashed write left behind.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from training.artifact import (
    ArtifactError,
    read_safetensors,
    remove_stale_temporaries,
    student_state_dict,
    verify_manifest,
    write_artifact,
)
from training.model import Student

_STEP_DIR = re.compile(r"^step-(\d{8})$")
DAMAGED_SUFFIX = ".damaged"


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint failed verification and was skipped or moved aside."""


class NonFiniteStateError(ArtifactError):
    """The model or optimizer holds NaN/inf values: such a state is not written as a checkpoint."""


def non_finite_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Names of model parameters/buffers and optimizer state tensors holding NaN or inf (empty: all finite)."""
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if optimizer is not None:
        for idx, entry in optimizer.state_dict()["state"].items():
            for key, value in entry.items():
                if (isinstance(value, torch.Tensor) and value.is_floating_point()
                        and not bool(torch.isfinite(value).all())):
                    bad.append(f"optimizer.state.{idx}.{key}")
        for group in optimizer.param_groups:
            for key, value in group.items():
                if isinstance(value, float) and not math.isfinite(value):
                    bad.append(f"optimizer.param_groups.{key}")
    return bad


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able remainder."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = tensor
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Current torch / python / numpy RNG states as (tensors, JSON)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    return (
        {"rng.torch": torch.get_rng_state()},
        {
            "python": [py_version, list(py_state), py_gauss],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
    )


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    root: str | Path,
    step: int,
    model: Student,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep_last: int,
    protect: set[str] | None = None,
) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically, verify it, and prune to ``keep_last`` valid checkpoints, the
    one just written always among them (names in ``protect``, e.g. the best one, are never pruned).

    Raises :class:`NonFiniteStateError` (nothing written) when the model or optimizer holds NaN/inf, and
    :class:`ArtifactError` when the written checkpoint does not verify (it is moved aside as damaged)."""
    root = Path(root)
    bad = non_finite_tensors(model, optimizer)
    if bad:
        raise NonFiniteStateError(
            f"not writing checkpoint step-{step:08d}: {len(bad)} tensors hold NaN/inf (first: {bad[:3]})"
        )
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = capture_rng()
    state = dict(trainer_state, step=step, optimizer=opt_meta, rng=rng_meta)

    def populate(tmp: Path) -> None:
        model.config.save(tmp / "config.json")
        save_file(student_state_dict(model), str(tmp / "model.safetensors"))
        save_file({**opt_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")

    path = write_artifact(root / f"step-{step:08d}", populate)
    try:
        verify_manifest(path)
    except ArtifactError as exc:
        aside = move_aside(path, exc)
        raise ArtifactError(f"checkpoint {path} did not verify right after it was written ({exc}); moved "
                            f"to {aside}. Check the disk.") from exc
    _remember_valid(path)
    prune_checkpoints(root, keep_last, protect or set(), newest=path)
    return path


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def checkpoint_step(path: Path) -> int:
    """The step number in a ``step-XXXXXXXX`` name."""
    match = _STEP_DIR.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint directory name (step-XXXXXXXX)")
    return int(match.group(1))


# Checkpoints this process verified, with the identity (inode, size, mtime) of every file then: a checkpoint
# is never modified after its atomic rename, so pruning re-hashes one only when a file was replaced, resized
# or rewritten. Resume always verifies in full (a bit flip keeps the identity).
_VERIFIED: dict[Path, tuple[tuple[str, int, int, int], ...]] = {}


def _identity(path: Path) -> tuple[tuple[str, int, int, int], ...] | None:
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((p.relative_to(path).as_posix(), (st := p.stat()).st_ino, st.st_size, st.st_mtime_ns)
                     for p in files)
    except OSError:
        return None


def _remember_valid(path: Path) -> None:
    identity = _identity(path)
    if identity is not None:
        _VERIFIED[path.resolve()] = identity


def checkpoint_is_valid(path: Path, *, cached: bool = True) -> tuple[bool, str]:
    """(whether ``path`` verifies against its manifest, why not). With ``cached``, a checkpoint this process
    verified before and whose files were not touched since is not hashed again."""
    if cached and (identity := _identity(path)) is not None and _VERIFIED.get(path.resolve()) == identity:
        return True, ""
    try:
        verify_manifest(path)
    except ArtifactError as exc:
        _VERIFIED.pop(path.resolve(), None)
        return False, str(exc)
    _remember_valid(path)
    return True, ""


def checkpoint_verifies(path: Path) -> bool:
    """Whether ``path`` verifies against its manifest now (a full check, never the cache)."""
    try:
        verify_manifest(path)
    except (ArtifactError, OSError):
        return False
    return True


def move_aside(path: Path, reason: object) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (``.damaged-2``, ... if taken), out of the set that
    resume and pruning consider, and warn; the files stay for inspection (delete them when done)."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{n}")
        n += 1
    path.rename(target)
    _VERIFIED.pop(path.resolve(), None)
    warnings.warn(f"checkpoint {path} is damaged ({reason}); moved it to {target} (not resumed from, not "
                  "counted as a kept checkpoint; delete it once inspected)", DamagedCheckpointWarning, stacklevel=3)
    return target


def prune_checkpoints(root: Path, keep_last: int, protect: set[str], newest: Path | None = None) -> None:
    """Keep ``keep_last`` valid checkpoints and delete the rest (except names in ``protect``).

    ``newest`` (the checkpoint just written; default: the highest-numbered valid one) is always kept. The
    others are ranked by recency along this run's timeline: steps up to ``newest``'s, latest first, then
    higher-numbered ones (left by another run, or from beyond the point this run resumed from), which are
    older than ``newest`` however high their numbers. Damaged checkpoints are moved aside, never counted.
    """
    valid: list[Path] = []
    for path in list_checkpoints(root):
        if newest is not None and path.resolve() == newest.resolve():
            continue
        ok, why = checkpoint_is_valid(path)
        if ok:
            valid.append(path)
        else:
            move_aside(path, why)
    if newest is None:
        if not valid:
            return
        newest = max(valid, key=checkpoint_step)
        valid.remove(newest)
    current = checkpoint_step(newest)
    ranked = sorted(valid, key=lambda p: (checkpoint_step(p) <= current, checkpoint_step(p)), reverse=True)
    for path in ranked[max(keep_last - 1, 0):]:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)
            _VERIFIED.pop(path.resolve(), None)


def latest_valid_checkpoint(root: str | Path) -> Path | None:
    """Newest checkpoint whose manifest verifies; damaged newer ones are skipped with a warning (they are
    moved aside by the next pruning, which only the writing rank does)."""
    for path in reversed(list_checkpoints(root)):
        ok, why = checkpoint_is_valid(path, cached=False)
        if ok:
            return path
        warnings.warn(f"skipping damaged checkpoint {path}: {why}", DamagedCheckpointWarning, stacklevel=2)
    return None


def remove_stale_checkpoint_temporaries(root: str | Path, started_at: float) -> list[Path]:
    """Remove the ``.step-XXXXXXXX.tmp-*`` / ``.old-*`` directories a crashed checkpoint write left under
    ``root`` (see :func:`training.artifact.remove_stale_temporaries`); returns what was removed."""
    return remove_stale_temporaries(root, _STEP_DIR, started_at=started_at)


def load_checkpoint(path: str | Path, model: Student, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Verify and load a checkpoint into ``model`` and ``optimizer``; restores RNG; returns trainer state."""
    path = Path(path)
    verify_manifest(path)
    weights = read_safetensors([path / "model.safetensors"])
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise ArtifactError(f"{path}: checkpoint does not fit the model (missing {missing}, unexpected {unexpected})")
    state = json.loads((path / "trainer_state.json").read_text())
    tensors = read_safetensors([path / "optimizer.safetensors"])
    rng_tensors = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith("state.")}
    optimizer.load_state_dict(optimizer_from_flat(opt_tensors, state["optimizer"]))
    restore_rng(rng_tensors, state["rng"])
    return state


_RUN_ARTIFACTS = re.compile(r"best|student")


def remove_stale_run_temporaries(out_dir: str | Path, started_at: float) -> list[Path]:
    """Stale temporaries of a run directory: checkpoint writes under ``out_dir/checkpoints`` and the
    ``best`` / ``student`` artifacts in ``out_dir`` (see :func:`remove_stale_temporaries`)."""
    out_dir = Path(out_dir)
    return [*remove_stale_checkpoint_temporaries(out_dir / "checkpoints", started_at),
            *remove_stale_temporaries(out_dir, _RUN_ARTIFACTS, started_at=started_at)]
