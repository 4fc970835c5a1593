"""Versions store: provenance, byte-identical restore, tamper refusal, the version in use, the CLI."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest
import torch

from training import versions
from training.artifact import sha256_file
from training.kd.checkpoint import save_checkpoint
from training.model import Student
from training.ops.run_control import RUN_CONFIG_FILE, write_json_atomic
from training.ops.structured_log import read_log
from training.versions import VersionError, VersionRefused, VersionStore, git_commit


def _tree(directory: Path) -> dict[str, bytes]:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in files}


@pytest.fixture
def run_dir(tmp_path: Path, tiny_artifact: Path, tiny_student: Student) -> Path:
    """A finished run: student, the checkpoint with the same weights, an older one, run_config.json."""
    run = tmp_path / "run"
    shutil.copytree(tiny_artifact, run / "student")
    optimizer = torch.optim.AdamW(tiny_student.parameters(), lr=1e-3)
    state = {"run_id": "run0000abcd", "config_fingerprint": "c" * 64, "last_metrics": {}}
    other = Student(tiny_student.config)
    save_checkpoint(run / "checkpoints", 5, other, torch.optim.AdamW(other.parameters()), state, keep_last=5)
    save_checkpoint(run / "checkpoints", 12, tiny_student, optimizer, state, keep_last=5)
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text('{"id": "1", "prompt": "a", "completion": "b"}\n')
    write_json_atomic(run / RUN_CONFIG_FILE, {"config": {"data": {"train": ["data/train.jsonl"], "val": []}},
                                              "fingerprint": "f" * 64, "cwd": str(tmp_path),
                                              "run_id": "run0000abcd"})
    return run


def test_git_commit_reads_heads_refs_packed_refs_and_worktrees(tmp_path: Path) -> None:
    sha = "a" * 40
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    (repo / "pkg" / "sub").mkdir(parents=True)
    assert git_commit(repo / "pkg" / "sub") == sha
    (repo / ".git" / "refs" / "heads" / "main").unlink()
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs with: peeled\n{'b' * 40} refs/heads/main\n")
    assert git_commit(repo / "pkg") == "b" * 40
    (repo / ".git" / "HEAD").write_text("c" * 40 + "\n")
    assert git_commit(repo) == "c" * 40
    worktree = tmp_path / "wt"
    (worktree / "src").mkdir(parents=True)
    gitdir = repo / ".git" / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/feature\n")
    (gitdir / "commondir").write_text("../..\n")
    (repo / ".git" / "refs" / "heads" / "feature").write_text("d" * 40 + "\n")
    (worktree / ".git").write_text(f"gitdir: {gitdir}\n")
    assert git_commit(worktree / "src") == "d" * 40


def test_git_commit_is_none_outside_a_work_tree(tmp_path: Path) -> None:
    lonely = tmp_path / "x"
    lonely.mkdir()
    if any((p / ".git").exists() for p in lonely.parents):
        pytest.skip("the temp dir is inside a git work tree here")
    assert git_commit(lonely) is None


def test_data_fingerprint_follows_file_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("one\n")
    b.write_text("two\n")
    first = versions.data_fingerprint([a], [b])
    assert [f["sha256"] for f in first["files"]] == [sha256_file(a), sha256_file(b)]
    assert versions.data_fingerprint([a], [b]) == first
    assert versions.data_fingerprint([b], [a])["sha256"] != first["sha256"]
    a.write_text("one!\n")
    assert versions.data_fingerprint([a], [b])["sha256"] != first["sha256"]


def test_create_records_step_metrics_config_and_data(run_dir: Path) -> None:
    store = VersionStore(run_dir)
    meta = store.create(note="first")
    assert meta["version"] == "v001" and meta["step"] == 12
    assert meta["step_source"] == "checkpoint step-00000012 (same weights)"
    assert meta["metrics"] == {"accuracy": 0.5}
    assert meta["config_hash"] == "f" * 64 and meta["run_id"] == "run0000abcd"
    train = run_dir.parent / "data" / "train.jsonl"
    assert meta["data_fingerprint"]["files"][0]["sha256"] == sha256_file(train)
    assert meta["with_state"] is False and meta["checkpoint"] is None
    assert _tree(run_dir / "versions" / "v001" / "student") == _tree(run_dir / "student")
    assert store.index().current == "v001"
    assert [r["event"] for r in read_log(store.root / "versions.jsonl")] == ["version_created"]


def test_create_without_a_matching_checkpoint(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "checkpoints" / "step-00000012")
    store = VersionStore(run_dir)
    with pytest.raises(VersionError, match="no valid checkpoint"):
        store.create(with_state=True)
    meta = store.create()
    assert meta["step"] is None and meta["config_hash"] == "f" * 64


def test_restore_is_byte_identical_and_marks_current(run_dir: Path, tmp_path: Path) -> None:
    store = VersionStore(run_dir)
    store.create(with_state=True)
    store.create()
    target = tmp_path / "restored"
    result = store.restore("v001", to=target, with_state=True)
    assert _tree(target) == _tree(run_dir / "student")
    assert filecmp.cmp(target / "manifest.json", run_dir / "student" / "manifest.json", shallow=False)
    assert result["checkpoint"] == str(run_dir / "checkpoints" / "step-00000012")
    assert store.index().current == "v001"
    with pytest.raises(VersionError, match="without --with-state"):
        store.restore("v002", with_state=True)


def test_a_tampered_version_is_refused_and_nothing_is_written(run_dir: Path, tmp_path: Path) -> None:
    store = VersionStore(run_dir)
    store.create()
    weights = store.root / "v001" / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    target = tmp_path / "restored"
    with pytest.raises(VersionRefused, match="model.safetensors"):
        store.restore("v001", to=target)
    assert not target.exists()
    shown = store.show("v001", verify=True)
    assert shown["verified"] is False and "model.safetensors" in shown["verify_error"]


def test_delete_refuses_the_version_in_use(run_dir: Path) -> None:
    store = VersionStore(run_dir)
    store.create()
    store.create()
    with pytest.raises(VersionRefused, match="in use"):
        store.delete("v002")
    store.delete("v001")
    assert not (store.root / "v001").exists()
    assert [e["version"] for e in store.entries()] == ["v002"]
    assert store.create()["version"] == "v003"  # numbers are never reused
    with pytest.raises(VersionError, match="no version v001"):
        store.restore("v001")
    with pytest.raises(VersionError, match="not a version name"):
        store.show("latest")


def test_cli_round_trip_and_exit_codes(run_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert versions.main(["create", str(run_dir), "--with-state", "--note", "cli"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["version"] == "v001" and created["checkpoint"] == "step-00000012"
    assert versions.main(["list", str(run_dir)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["current"] == "v001" and listing["versions"][0]["note"] == "cli"
    assert versions.main(["show", str(run_dir), "v001", "--verify"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert versions.main(["restore", str(run_dir), "v001", "--to", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert _tree(tmp_path / "out") == _tree(run_dir / "student")
    assert versions.main(["delete", str(run_dir), "v001"]) == 1
    assert "in use" in capsys.readouterr().err
    assert versions.main(["show", str(run_dir), "v404"]) == 2
    assert versions.main(["create", str(run_dir), "--source", str(tmp_path / "nothing")]) == 2
    with pytest.raises(SystemExit) as exc:
        versions.main(["--help"])
    assert exc.value.code == 0


def test_same_weights_compares_tensor_values(run_dir: Path) -> None:
    newest, oldest = run_dir / "checkpoints" / "step-00000012", run_dir / "checkpoints" / "step-00000005"
    student = run_dir / "student" / "model.safetensors"
    assert versions.same_weights(newest / "model.safetensors", student)
    assert not versions.same_weights(oldest / "model.safetensors", student)


def test_restore_refuses_a_non_empty_unrelated_target_and_keeps_its_files(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = VersionStore(run_dir)
    store.create()
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"\xff\xd8 not a model")
    assert versions.main(["restore", str(run_dir), "v001", "--to", str(unrelated)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not empty" in err and "Traceback" not in err
    assert sorted(p.name for p in unrelated.iterdir()) == ["holiday.jpg"]
    for doomed in (run_dir, run_dir.parent):  # the run directory itself, or a directory above it
        with pytest.raises(VersionError, match="holds the run directory"):
            store.restore("v001", to=doomed)
    assert (run_dir / "student" / "manifest.json").is_file()


def test_restore_replaces_a_previous_restore_or_an_empty_directory(run_dir: Path, tmp_path: Path) -> None:
    store = VersionStore(run_dir)
    store.create()
    empty = tmp_path / "empty"
    empty.mkdir()
    store.restore("v001", to=empty)
    assert _tree(empty) == _tree(run_dir / "student")
    (empty / "config.json").write_text("{}")  # a previous restore, even a damaged one, is ours to replace
    store.restore("v001", to=empty)
    assert _tree(empty) == _tree(run_dir / "student")


def test_show_verify_exits_non_zero_naming_the_damaged_file(run_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = VersionStore(run_dir)
    store.create()
    weights = store.root / "v001" / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert versions.main(["show", str(run_dir), "v001"]) == 0  # no --verify: metadata only
    capsys.readouterr()
    assert versions.main(["show", str(run_dir), "v001", "--verify"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["verified"] is False
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "model.safetensors" in captured.err
