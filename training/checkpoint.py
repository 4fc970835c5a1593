"""Pickle-free training checkpoints for exact resume.

A checkpoint is an artifact directory (atomic write, sha256 manifest) holding ``model.safetensors``,
``optimizer.safetensors`` (every optimizer tensor), ``config.json`` and ``trainer_state.json`` (step,
optimizer hyper-parameters, RNG states, data position, best metric, config fingerprint). Nothing is
unpickled on load, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
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
    student_state_dict,
    verify_manifest,
    write_artifact,
)
from training.model import Student

_STEP_DIR = re.compile(r"^step-(\d{8})$")


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
    """Write ``root/step-XXXXXXXX`` atomically and prune all but the newest ``keep_last`` checkpoints
    (names in ``protect``, e.g. the best one, are never pruned)."""
    root = Path(root)
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = capture_rng()
    state = dict(trainer_state, step=step, optimizer=opt_meta, rng=rng_meta)

    def populate(tmp: Path) -> None:
        model.config.save(tmp / "config.json")
        save_file(student_state_dict(model), str(tmp / "model.safetensors"))
        save_file({**opt_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")

    path = write_artifact(root / f"step-{step:08d}", populate)
    prune_checkpoints(root, keep_last, protect or set())
    return path


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def prune_checkpoints(root: Path, keep_last: int, protect: set[str]) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (except protected names)."""
    for path in list_checkpoints(root)[:-keep_last]:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)


def latest_valid_checkpoint(root: str | Path) -> Path | None:
    """Newest checkpoint whose manifest verifies; damaged newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify_manifest(path)
            return path
        except ArtifactError as exc:
            warnings.warn(f"skipping damaged checkpoint {path}: {exc}", stacklevel=2)
    return None


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
