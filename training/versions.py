"""Versioned snapshots of a run's student: ``python -m training.versions {create,list,show,restore,delete}``.

A store (``RUN_DIR/versions`` unless ``--store``) holds one artifact directory per version, ``v001``,
``v002``, ... (numbers are never reused), written atomically with a sha256 manifest over everything in it:

* ``student/`` — a byte-for-byte copy of the student artifact (its own manifest included);
* ``checkpoint/step-XXXXXXXX/`` — with ``--with-state``: the training checkpoint holding the same weights
  (optimizer, schedule, data position, RNG), so training can continue exactly from the version;
* ``version.json`` — metadata: step, metrics, config hash, data fingerprint (sha256 of every train/val
  file), git commit of the code (null outside a git checkout), source paths, note.

``index.json`` beside the versions lists them and records ``current``: the version *in use*, i.e. the one
most recently created or restored. ``delete`` refuses it (restore or create another version first).
``restore`` verifies every hash of the version (and of its student's own manifest) before copying
anything, and writes a byte-identical student artifact (atomically) to ``--to`` (default
``RUN_DIR/student``); a tampered version is refused with the name of the altered file.

Where the metadata comes from: step = the step of the newest valid checkpoint of the run whose weights
equal the student's (null when none does); config hash and data files = ``RUN_DIR/run_config.json``
(written by the trainer's run-control hook) or ``--config FILE``; metrics = the student's
``metrics.json``. Every action is logged as a JSON line with the run's id to ``STORE/versions.jsonl``.

``restore --to DIR`` refuses a ``DIR`` that is not empty and is not a Distillery artifact (a previous
restore, or a student the run wrote): it never deletes unrelated files. ``show --verify`` exits 1 when the
version is damaged, naming the damaged file.

Exit codes: 0 done, 1 refused (damaged version, version in use), 2 bad arguments or missing inputs (one
``error:`` line, see :mod:`training.user_errors`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open

from training.artifact import (
    ARTIFACT_FORMAT,
    MANIFEST_FILE,
    ArtifactError,
    replace_directory,
    sha256_file,
    verify_manifest,
    write_artifact,
)
from training.kd.checkpoint import list_checkpoints
from training.ops.run_control import RUN_CONFIG_FILE, RUN_STATE_FILE, read_json, write_json_atomic
from training.ops.structured_log import StructuredLogger, new_run_id
from training.user_errors import user_error_exit

STORE_DIR = "versions"
INDEX_FILE = "index.json"
METADATA_FILE = "version.json"
LOG_FILE = "versions.jsonl"
_VERSION = re.compile(r"^v(\d{3,})$")


class VersionError(RuntimeError):
    """A version cannot be created, found, restored or deleted; the message says why."""


class VersionRefused(VersionError):
    """The store refuses the operation (damaged version, version in use)."""


class VersionEntry(BaseModel):
    """One version as listed in the index."""

    model_config = ConfigDict(extra="forbid")

    created_at: float
    step: int | None
    with_state: bool
    note: str | None = None


class StoreIndex(BaseModel):
    """``index.json``: the versions, the next number, and the version in use."""

    model_config = ConfigDict(extra="forbid")

    format: str = "distillery-versions"
    next_number: int = Field(1, ge=1)
    current: str | None = None
    versions: dict[str, VersionEntry] = {}


# ---- provenance --------------------------------------------------------------------------------------------
def git_commit(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start`` (read from ``.git``, no git binary),
    or None outside a git work tree or when HEAD cannot be resolved."""
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (directory / text.split(":", 1)[1].strip()).resolve()
        elif dot_git.is_dir():
            git_dir = dot_git
        else:
            continue
        return _resolve_head(git_dir)
    return None


def _resolve_head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
    ref = head.split(":", 1)[1].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():  # linked worktrees keep refs in the main repository
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        ref_file = base / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
    for base in (git_dir, common):
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and not line.startswith(("#", "^")):
                    return parts[0]
    return None


def data_fingerprint(train: list[Path], val: list[Path]) -> dict[str, Any]:
    """sha256 and size of every data file, and one sha256 over the ordered (role, file hash) list."""
    files = []
    for role, paths in (("train", train), ("val", val)):
        for path in paths:
            files.append({"role": role, "path": str(path), "sha256": sha256_file(path),
                          "size": path.stat().st_size})
    combined = hashlib.sha256(json.dumps([[f["role"], f["sha256"]] for f in files]).encode()).hexdigest()
    return {"sha256": combined, "files": files}


def _run_config(run_dir: Path, config_file: Path | None) -> tuple[dict[str, Any] | None, str | None, Path]:
    """(config as a dict, its fingerprint, the directory relative data paths are resolved against)."""
    if config_file is not None:
        from training.kd.config import ConfigFileError, load_config

        try:
            cfg = load_config(config_file)
        except ConfigFileError as exc:
            raise VersionError(str(exc)) from exc
        return cfg.model_dump(mode="json"), cfg.fingerprint(), Path.cwd()
    saved = read_json(run_dir / RUN_CONFIG_FILE)
    if saved and isinstance(saved.get("config"), dict):
        return saved["config"], saved.get("fingerprint"), Path(saved.get("cwd") or run_dir)
    return None, None, run_dir


def _resolve(base: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else base / path


def same_weights(a: Path, b: Path) -> bool:
    """Whether two safetensors files hold the same tensor names with identical values (read one tensor at a
    time; file metadata is ignored)."""
    import torch

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        keys = set(fa.keys())  # noqa: SIM118 - safe_open is not a mapping
        if keys != set(fb.keys()):  # noqa: SIM118
            return False
        return all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in sorted(keys))


def matching_checkpoint(run_dir: Path, student: Path) -> Path | None:
    """The newest valid checkpoint of the run whose weights equal the student's."""
    for path in reversed(list_checkpoints(run_dir / "checkpoints")):
        try:
            verify_manifest(path)
        except ArtifactError:
            continue
        if same_weights(path / "model.safetensors", student / "model.safetensors"):
            return path
    return None


def _run_id(run_dir: Path, checkpoint: Path | None) -> str | None:
    for data in (read_json(checkpoint / "trainer_state.json") if checkpoint else None,
                 read_json(run_dir / RUN_STATE_FILE), read_json(run_dir / RUN_CONFIG_FILE)):
        if data and isinstance(data.get("run_id"), str):
            return data["run_id"]
    return None


# ---- copying -----------------------------------------------------------------------------------------------
def copy_tree_atomic(source: Path, target: Path) -> Path:
    """Copy a directory byte for byte to ``target`` through a temporary sibling renamed into place (the old
    ``target``, if any, is replaced only once the copy is complete and flushed; see
    :func:`training.artifact.replace_directory`)."""

    def fill(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        shutil.copymode(source, tmp)

    return replace_directory(target, fill)


def is_artifact_dir(path: Path) -> bool:
    """Whether ``path`` holds a Distillery artifact manifest (its files need not verify)."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == ARTIFACT_FORMAT


def check_restore_target(target: Path, run_dir: Path, store: Path) -> None:
    """Refuse a restore target whose replacement would destroy something else: the store or the run
    directory (or a directory holding them), a file, or a non-empty directory that is not a Distillery
    artifact (a previous restore, or the run's student).

    Raises:
        VersionError: naming the target and what to do.
    """
    if target == store or store in target.parents:
        raise VersionError(f"cannot restore into the version store itself ({target})")
    if target in (run_dir, *run_dir.parents) or target in store.parents:
        raise VersionError(f"--to {target} holds the run directory or the version store; restoring there would "
                           "replace them: choose a new or empty directory")
    if not target.exists():
        return
    if not target.is_dir():
        raise VersionError(f"--to {target} exists and is not a directory; choose a new or empty directory")
    if any(target.iterdir()) and not is_artifact_dir(target):
        raise VersionError(f"--to {target} is not empty and holds no {MANIFEST_FILE} of a Distillery artifact "
                           "(a previous restore); refusing to replace its files: choose a new or empty directory")


# ---- the store ---------------------------------------------------------------------------------------------
class VersionStore:
    """Versions of one run's student. ``root`` defaults to ``RUN_DIR/versions``."""

    def __init__(self, run_dir: str | Path, root: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.root = Path(root).resolve() if root is not None else self.run_dir / STORE_DIR

    # -- index and locking
    def index(self) -> StoreIndex:
        data = read_json(self.root / INDEX_FILE)
        return StoreIndex.model_validate(data) if data is not None else StoreIndex()

    def _save_index(self, index: StoreIndex) -> None:
        write_json_atomic(self.root / INDEX_FILE, index.model_dump(mode="json"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def logger(self, checkpoint: Path | None = None) -> StructuredLogger:
        return StructuredLogger("versions", _run_id(self.run_dir, checkpoint) or new_run_id(),
                                self.root / LOG_FILE)

    def path(self, version: str) -> Path:
        """The directory of ``version`` (``VersionError`` when the name is malformed or unknown)."""
        if not _VERSION.match(version):
            raise VersionError(f"{version!r} is not a version name (v001, v002, ...)")
        path = self.root / version
        if version not in self.index().versions or not path.is_dir():
            raise VersionError(f"no version {version} in {self.root}")
        return path

    # -- operations
    def create(self, source: Path | None = None, with_state: bool = False, config_file: Path | None = None,
               note: str | None = None) -> dict[str, Any]:
        """Snapshot ``source`` (default ``RUN_DIR/student``) as the next version; returns its metadata."""
        source = (Path(source) if source is not None else self.run_dir / "student").resolve()
        try:
            verify_manifest(source)
        except ArtifactError as exc:
            raise VersionError(f"cannot snapshot {source}: {exc}") from exc
        checkpoint = matching_checkpoint(self.run_dir, source)
        if with_state and checkpoint is None:
            raise VersionError(f"--with-state: no valid checkpoint in {self.run_dir / 'checkpoints'} holds "
                               f"the weights of {source}, so there is no training state to snapshot")
        trainer_state = read_json(checkpoint / "trainer_state.json") if checkpoint else None
        config, config_hash, base = _run_config(self.run_dir, config_file)
        if config_hash is None and trainer_state:
            config_hash = trainer_state.get("config_fingerprint")
        fingerprint, fingerprint_reason = None, None
        if config is not None:
            data = config.get("data", {})
            train = [_resolve(base, p) for p in data.get("train", [])]
            val = [_resolve(base, p) for p in data.get("val", [])]
            missing = [str(p) for p in train + val if not p.is_file()]
            if missing:
                fingerprint_reason = f"data files no longer exist: {missing}"
            else:
                fingerprint = data_fingerprint(train, val)
        else:
            fingerprint_reason = f"no {RUN_CONFIG_FILE} in the run and no --config given: data files unknown"
        commit = git_commit(Path(__file__).resolve().parent)
        metrics = read_json(source / "metrics.json") or {}
        with self._locked():
            index = self.index()
            name = f"v{index.next_number:03d}"
            metadata = {
                "version": name, "created_at": time.time(), "run_dir": str(self.run_dir),
                "source": str(source),
                "run_id": _run_id(self.run_dir, checkpoint),
                "step": int(trainer_state["step"]) if trainer_state else None,
                "step_source": f"checkpoint {checkpoint.name} (same weights)" if checkpoint else None,
                "metrics": metrics, "config_hash": config_hash, "data_fingerprint": fingerprint,
                "data_fingerprint_reason": fingerprint_reason, "git_commit": commit,
                "git_commit_reason": None if commit else "the code is not in a git work tree",
                "with_state": with_state,
                "checkpoint": checkpoint.name if with_state and checkpoint else None,
                "note": note,
            }

            def populate(tmp: Path) -> None:
                shutil.copytree(source, tmp / "student")
                if with_state and checkpoint is not None:
                    shutil.copytree(checkpoint, tmp / "checkpoint" / checkpoint.name)
                (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

            write_artifact(self.root / name, populate)
            index.versions[name] = VersionEntry(created_at=metadata["created_at"], step=metadata["step"],
                                                with_state=with_state, note=note)
            index.next_number += 1
            index.current = name
            self._save_index(index)
        self.logger(checkpoint).info("version_created", version=name, step=metadata["step"],
                                     source=str(source), with_state=with_state, config_hash=config_hash)
        return metadata

    def entries(self) -> list[dict[str, Any]]:
        index = self.index()
        return [{"version": name, "current": name == index.current, **entry.model_dump()}
                for name, entry in sorted(index.versions.items())]

    def show(self, version: str, verify: bool = False) -> dict[str, Any]:
        path = self.path(version)
        metadata = read_json(path / METADATA_FILE) or {}
        metadata["current"] = version == self.index().current
        if verify:
            try:
                self.verify(version)
                metadata["verified"] = True
            except VersionRefused as exc:
                metadata["verified"], metadata["verify_error"] = False, str(exc)
        return metadata

    def verify(self, version: str) -> Path:
        """Check every hash of a version and of its student artifact.

        Raises:
            VersionRefused: naming the damaged file.
        """
        path = self.path(version)
        try:
            verify_manifest(path)
            verify_manifest(path / "student")
            for checkpoint in (path / "checkpoint").glob("step-*"):
                verify_manifest(checkpoint)
        except ArtifactError as exc:
            raise VersionRefused(f"version {version} is damaged and will not be used: {exc}") from exc
        return path

    def restore(self, version: str, to: Path | None = None, with_state: bool = False) -> dict[str, Any]:
        """Verify ``version``, then copy its student byte for byte to ``to`` (default ``RUN_DIR/student``)
        and, with ``with_state``, its checkpoint into ``RUN_DIR/checkpoints``; marks it current."""
        target = (Path(to) if to is not None else self.run_dir / "student").resolve()
        check_restore_target(target, self.run_dir, self.root)
        with self._locked():
            path = self.verify(version)
            checkpoints = sorted((path / "checkpoint").glob("step-*"))
            if with_state and not checkpoints:
                raise VersionError(f"version {version} was created without --with-state: it holds no "
                                   "checkpoint")
            copy_tree_atomic(path / "student", target)
            verify_manifest(target)
            restored_checkpoint = None
            if with_state:
                restored_checkpoint = copy_tree_atomic(checkpoints[0],
                                                       self.run_dir / "checkpoints" / checkpoints[0].name)
                verify_manifest(restored_checkpoint)
            index = self.index()
            index.current = version
            self._save_index(index)
        result = {"version": version, "student": str(target),
                  "checkpoint": str(restored_checkpoint) if restored_checkpoint else None,
                  "resume_hint": f"resume={restored_checkpoint}" if restored_checkpoint else None}
        self.logger(restored_checkpoint).info("version_restored", **result)
        return result

    def delete(self, version: str) -> None:
        """Remove a version that is not in use."""
        with self._locked():
            path = self.path(version)
            index = self.index()
            if index.current == version:
                raise VersionRefused(f"version {version} is in use (the version last created or restored); "
                                     "restore or create another version before deleting it")
            doomed = self.root / f".deleting-{version}-{os.getpid()}"
            os.rename(path, doomed)
            del index.versions[version]
            self._save_index(index)
            shutil.rmtree(doomed)
        self.logger().info("version_deleted", version=version)


# ---- CLI ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.versions",
        description="Snapshot, list, inspect, restore and delete versions of a run's student.",
        epilog="Example: python -m training.versions create runs/toy --with-state --note 'before lr sweep'; "
               "python -m training.versions restore runs/toy v001",
    )
    parser.add_argument("--store", type=Path, default=None, help="version store (default RUN_DIR/versions)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="snapshot the run's student (and optionally its training state)")
    create.add_argument("run_dir", type=Path)
    create.add_argument("--source", type=Path, default=None,
                        help="student artifact (default RUN_DIR/student)")
    create.add_argument("--with-state", action="store_true",
                        help="also keep the checkpoint with the same weights (optimizer, data position, RNG)")
    create.add_argument("--config", type=Path, default=None,
                        help="the run's config YAML (default: RUN_DIR/run_config.json, written by the "
                             "trainer)")
    create.add_argument("--note", default=None)
    listing = sub.add_parser("list", help="list the versions")
    listing.add_argument("run_dir", type=Path)
    show = sub.add_parser("show", help="print a version's metadata as JSON")
    show.add_argument("run_dir", type=Path)
    show.add_argument("version")
    show.add_argument("--verify", action="store_true", help="also check every hash")
    restore = sub.add_parser("restore",
                             help="verify a version and copy its student (byte-identical) into place")
    restore.add_argument("run_dir", type=Path)
    restore.add_argument("version")
    restore.add_argument("--to", type=Path, default=None, help="target directory (default RUN_DIR/student)")
    restore.add_argument("--with-state", action="store_true",
                         help="also restore the checkpoint into RUN_DIR/checkpoints (resume from it)")
    delete = sub.add_parser("delete", help="delete a version (never the one in use)")
    delete.add_argument("run_dir", type=Path)
    delete.add_argument("version")
    return parser


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    """Run one action; exit code 0 done, 1 refused or damaged, 2 bad arguments or missing inputs."""
    args = build_parser().parse_args(argv)
    store = VersionStore(args.run_dir, args.store)
    try:
        if args.action == "create":
            out: Any = store.create(args.source, args.with_state, args.config, args.note)
        elif args.action == "list":
            out = {"store": str(store.root), "current": store.index().current, "versions": store.entries()}
        elif args.action == "show":
            out = store.show(args.version, args.verify)
        elif args.action == "restore":
            out = store.restore(args.version, args.to, args.with_state)
        else:
            store.delete(args.version)
            out = {"deleted": args.version}
    except VersionRefused as exc:
        store.logger().error("refused", action=args.action, error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    if args.action == "show" and out.get("verified") is False:
        print(f"error: {out['verify_error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
