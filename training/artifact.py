"""Student artifacts: a Hugging Face-compatible directory with a manifest of sha256 hashes.

Layout (DESIGN.md): ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json``, ``README.md`` (model card), ``metrics.json``, ``manifest.json``.
Writes are atomic: everything goes to a temporary sibling directory which is renamed into place.
Loading verifies every file in the manifest and refuses a missing, truncated or altered file.
Weights are read with ``safetensors`` only; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from training.checksums import sha256_file
from training.model import Student
from training.model_card import render_model_card
from training.model_config import ModelConfig

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ARTIFACT_FORMAT = "distillery-artifact"
ARTIFACT_FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """An artifact directory is missing, partial, tampered with, or not loadable."""


class UnverifiedArtifactWarning(UserWarning):
    """A directory was loaded without a manifest, so nothing about its files was verified."""


def build_manifest(directory: Path) -> dict[str, Any]:
    """Manifest dict for every regular file under ``directory`` (except the manifest itself)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel == MANIFEST_FILE:
            continue
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_FORMAT_VERSION, "files": files}


def verify_manifest(directory: str | Path) -> dict[str, Any]:
    """Check every file listed in ``manifest.json``; raise :class:`ArtifactError` naming the bad file."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: this is not a complete Distillery artifact")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable or malformed ({exc}); re-export the artifact") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{manifest_path} is not a {ARTIFACT_FORMAT} manifest")
    if not isinstance(files, dict):
        raise ArtifactError(f"{manifest_path} is malformed: 'files' must map file names to entries")
    for rel, entry in files.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool)):
            raise ArtifactError(f"{manifest_path} is malformed: the entry for {rel!r} needs sha256 and size")
        rel_path = PurePosixPath(rel)
        if not rel or rel_path.is_absolute() or ".." in rel_path.parts:
            raise ArtifactError(f"{manifest_path} is malformed: {rel!r} is not a path inside the artifact")
        path = directory / rel
        if not path.is_file():
            raise ArtifactError(f"{rel} is listed in the manifest but missing from {directory} (partial artifact)")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(
                f"{rel} has {size} bytes but the manifest says {entry['size']} (truncated or altered file) "
                f"in {directory}"
            )
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{rel} does not match its sha256 in the manifest (altered file) in {directory}")
    return manifest


def write_artifact(directory: str | Path, populate: Callable[[Path], None]) -> Path:
    """Atomically create or replace ``directory``: ``populate(tmp)`` writes files, then the manifest is
    added and the temporary directory is renamed into place (:func:`replace_directory`). A crash leaves the
    old artifact intact."""

    def fill(tmp: Path) -> None:
        populate(tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(build_manifest(tmp), indent=2, sort_keys=True) + "\n")
        for path in tmp.rglob("*"):
            if path.is_file():
                # safetensors' save_file creates 0600 files whatever the umask: same readability as the rest
                os.chmod(path, 0o666 & ~_umask())

    return replace_directory(directory, fill)


def replace_directory(directory: str | Path, populate: Callable[[Path], None]) -> Path:
    """Atomically create or replace ``directory`` with what ``populate(tmp)`` writes into a temporary sibling.

    The sibling ``.<name>.tmp-<pid>-<random>`` gets the mode an ordinary ``mkdir`` would give; once
    ``populate`` returns, its files are fsynced and it is renamed into place. An existing ``directory`` is
    moved aside to ``.<name>.old-<pid>`` for that rename (put back if the rename fails, deleted after). On
    any error the temporary is removed and the old directory stays; a crash leaves entries that
    :func:`remove_stale_temporaries` recognizes. Returns the resolved ``directory``.
    """
    directory = Path(directory).resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name lets remove_stale_temporaries tell a crashed write from a live one
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{os.getpid()}-", dir=directory.parent))
    old: Path | None = None
    try:
        # mkdtemp creates the directory 0700; give it the mode an ordinary mkdir would have, or it becomes
        # unreadable to other users (serving containers, shared caches) once renamed.
        os.chmod(tmp, 0o777 & ~_umask())
        populate(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        if directory.exists():
            backup = directory.parent / f".{directory.name}.old-{os.getpid()}"
            if backup.exists():
                shutil.rmtree(backup)
            os.rename(directory, backup)
            old = backup
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        # the previous directory was moved aside but the new one did not take its place: put it back
        if old is not None and not directory.exists():
            os.rename(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?P<kind>tmp|old)-(?P<rest>.+)$")
_TMP_WITH_PID = re.compile(r"^(?P<pid>\d+)-")
_LEGACY_TMP = re.compile(r"^[a-z0-9_]{8}$")  # tempfile.mkdtemp's random part, before pids were in names


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def remove_stale_temporaries(parent: str | Path, names: re.Pattern[str], *, started_at: float) -> list[Path]:
    """Clean up after :func:`write_artifact` calls that crashed (killed, out of memory, power loss) in ``parent``.

    Only entries that are clearly ours are touched: ``.<name>.tmp-<pid>-<random>`` (a partial write) and
    ``.<name>.old-<pid>`` (the previous artifact, moved aside during the final rename), where ``<name>``
    matches ``names``. An entry is stale when its writer cannot still be writing it: the pid is not a live
    process, or it is this process and the entry is older than ``started_at`` (a wall-clock time: the run's
    start, or now on a failure path); a temporary without a pid (older Distillery) is stale when older than
    ``started_at``. Entries of other live processes are left alone. Stale partial writes are deleted; a
    stale ``.old-`` directory is deleted when ``<name>`` exists, else renamed back to ``<name>`` (the crash
    came between the two renames and it is the only copy). Pids are this machine's: do not share one
    directory between writers on several machines. Returns the paths removed or restored.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    done: list[Path] = []
    for entry in sorted(parent.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match is None or not names.fullmatch(match["name"]) or not entry.is_dir() or entry.is_symlink():
            continue
        rest = match["rest"]
        pid_match = _TMP_WITH_PID.match(rest) if match["kind"] == "tmp" else re.fullmatch(r"(?P<pid>\d+)", rest)
        if pid_match is None and not (match["kind"] == "tmp" and _LEGACY_TMP.fullmatch(rest)):
            continue
        try:
            older = entry.stat().st_mtime < started_at
        except OSError:
            continue
        if pid_match is None:
            stale = older
        else:
            pid = int(pid_match["pid"])
            stale = older if pid == os.getpid() else not _pid_alive(pid)
        if not stale:
            continue
        target = parent / match["name"]
        if match["kind"] == "old" and not target.exists():
            os.rename(entry, target)
            warnings.warn(f"restored {target} from {entry.name}, left by a write that crashed between its "
                          "two renames", stacklevel=2)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def student_state_dict(model: Student) -> dict[str, torch.Tensor]:
    """Contiguous fp32/bf16 tensors under Hugging Face Llama names (tied ``lm_head`` omitted, as in HF)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_student(
    model: Student,
    directory: str | Path,
    *,
    tokenizer: Any | None = None,
    metrics: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete, verified student artifact to ``directory`` (atomic).

    tokenizer: a :class:`training.tokenizer.DistilleryTokenizer` (its files are written beside the
    weights); metrics: written to ``metrics.json`` and the card; card: model-card fields (``data``,
    ``teacher``, ``losses``, ``limits``, ...); generation: overrides for ``generation_config.json``;
    extra_tensors: additional named tensors stored in ``model.safetensors`` (e.g. judge heads).
    """
    config = model.config
    state = student_state_dict(model)
    for name, tensor in (extra_tensors or {}).items():
        if name in state:
            raise ValueError(f"extra tensor {name!r} collides with a model tensor")
        state[name] = tensor.detach().contiguous().cpu()
    metrics = dict(metrics or {})
    gen = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "do_sample": False,
        "max_new_tokens": 64,
    }
    gen.update(generation or {})

    def populate(tmp: Path) -> None:
        config.save(tmp / CONFIG_FILE)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(
            render_model_card(config, model.num_parameters(), card or {}, metrics)
        )
        for rel, data in (extra_files or {}).items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    return write_artifact(directory, populate)


def read_safetensors(paths: list[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read tensors from safetensors files (no pickle), optionally casting floating tensors."""
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = fh.get_tensor(key)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                state[key] = tensor
    return state


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a directory (single file or a sharded index)."""
    single = directory / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    if (directory / "pytorch_model.bin").exists():
        raise ArtifactError(
            f"{directory} holds only pytorch_model.bin (a pickle); Distillery never unpickles weights it did "
            "not write. Convert it to safetensors first (e.g. transformers' save_pretrained(safe_serialization=True))."
        )
    raise ArtifactError(f"{directory} has no {WEIGHTS_FILE}: not a model directory")


def weight_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in safetensors ``files``, from their headers only (no tensor is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shapes[key] = tuple(fh.get_slice(key).get_shape())
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise ArtifactError(f"{path} could not be read ({exc})") from exc
    return shapes


def check_weight_shapes(directory: Path, config: ModelConfig, files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Refuse weights whose header shapes differ from what ``config`` implies, before anything is allocated
    (a ``config.json`` saying ``intermediate_size: 10000000`` must not build a 5 GB model first). Tensors the
    weights lack are left to the caller; extra tensors (e.g. judge heads) are allowed. Returns the shapes."""
    shapes = weight_shapes(files)
    for name, want in config.parameter_shapes().items():
        have = shapes.get(name)
        if have is not None and have != want:
            raise ArtifactError(
                f"{directory}: tensor {name} has shape {have} in the weights but {directory / CONFIG_FILE} implies "
                f"{want}; the config and the weights do not belong together"
            )
    return shapes


def load_state_dict(directory: str | Path, *, verify: bool = True) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and tensors of an artifact or Hugging Face Llama directory (manifest verified if present)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a directory")
    covered: set[str] | None = None
    if (directory / MANIFEST_FILE).exists():
        if verify:
            covered = set(verify_manifest(directory)["files"])
    else:
        warnings.warn(
            f"{directory} has no {MANIFEST_FILE}: loading it as a plain Hugging Face directory, nothing was "
            "verified",
            UnverifiedArtifactWarning,
            stacklevel=3,
        )
    if not (directory / CONFIG_FILE).is_file():
        raise ArtifactError(f"{directory / CONFIG_FILE} is missing")
    files = weight_files(directory)
    if covered is not None:
        # a manifest that does not list the files read below would "verify" nothing about them
        sharded = files != [directory / WEIGHTS_FILE]
        index = [directory / "model.safetensors.index.json"] if sharded else []
        needed = [directory / CONFIG_FILE, *files, *index]
        for path in needed:
            rel = path.relative_to(directory).as_posix()
            if rel not in covered:
                raise ArtifactError(f"{rel} is not listed in {directory / MANIFEST_FILE}, so it is unverified")
    config = ModelConfig.load(directory / CONFIG_FILE)
    check_weight_shapes(directory, config, files)
    try:
        state = read_safetensors(files, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{directory / WEIGHTS_FILE} could not be read ({exc})") from exc
    return config, state


def load_student(directory: str | Path, *, verify: bool = True, map_location: str = "cpu") -> Student:
    """Build a :class:`Student` from an artifact or a Hugging Face Llama directory."""
    config, state = load_state_dict(directory, verify=verify)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    expected = set(config.parameter_shapes())
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing = sorted(expected - set(state))
    if missing:
        raise ArtifactError(f"{directory}: weights are missing tensors {missing[:5]} ({len(missing)} in all)")
    model = Student(config)  # only now: every tensor it allocates is known to be in the weights, same shape
    model_state = {k: v for k, v in state.items() if k in expected}
    own = model.state_dict()
    for key, tensor in model_state.items():
        want = own[key].shape
        if tensor.shape != want:
            raise ArtifactError(f"{directory}: tensor {key} has shape {tuple(tensor.shape)}, config implies {tuple(want)}")
    model.load_state_dict(model_state, strict=False)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(map_location).eval()


def extra_tensors(directory: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose names start with ``prefix`` (e.g. judge heads) from a verified artifact."""
    _, state = load_state_dict(directory, verify=True)
    return {k: v for k, v in state.items() if k.startswith(prefix)}
