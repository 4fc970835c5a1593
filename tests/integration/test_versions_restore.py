"""End to end on a real finished run: versions restore is byte-identical, a tampered version is refused,
and a resumed run whose locked config keys changed is refused by ``python -m training.distill_kd`` naming
the key."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from run_fixtures import (
    REPO,
    distill_command,
    kd_config,
    run_module,
    subprocess_env,
    tiny_project,
    write_config,
)

from training import versions
from training.artifact import verify_manifest
from training.ops.structured_log import read_log


def _tree(directory: Path) -> dict[str, bytes]:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    """(config file, run dir, project) of a completed 30-step run started through the CLI."""
    root = tmp_path_factory.mktemp("versions")
    project = tiny_project(root, n_train=80)
    config = write_config(root / "run.yaml", kd_config(root, project["tokenizer"], [project["train"]],
                                                       [project["val"]], optim={"max_steps": 30},
                                                       checkpoint={"every": 10, "keep_last": 2}))
    done = subprocess.run(distill_command("--config", str(config)), cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, root / "run", project


def test_restore_round_trip_is_byte_identical_and_tampering_is_refused(finished_run: tuple[Path, Path, dict],
                                                                       tmp_path: Path) -> None:
    _, run_dir, project = finished_run
    created = run_module("training.versions", "create", str(run_dir), "--with-state", "--note", "integration",
                         timeout=120)
    assert created.returncode == 0, created.stderr
    meta = json.loads(created.stdout)
    assert meta["version"] == "v001" and meta["step"] == 30 and meta["checkpoint"] == "step-00000030"
    assert meta["metrics"] == json.loads((run_dir / "student" / "metrics.json").read_text())
    state = json.loads((run_dir / "checkpoints" / "step-00000030" / "trainer_state.json").read_text())
    assert meta["config_hash"] == state["config_fingerprint"] and meta["run_id"] == state["run_id"]
    fingerprinted = [f["path"] for f in meta["data_fingerprint"]["files"]]
    assert fingerprinted == [str(project["train"]), str(project["val"])]

    target = tmp_path / "restored"
    restored = run_module("training.versions", "restore", str(run_dir), "v001", "--to", str(target),
                          timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert _tree(target) == _tree(run_dir / "student")
    verify_manifest(target)

    weights = run_dir / "versions" / "v001" / "student" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    again = tmp_path / "again"
    assert versions.main(["restore", str(run_dir), "v001", "--to", str(again)]) == 1
    assert not again.exists()
    assert versions.main(["delete", str(run_dir), "v001"]) == 1  # in use (last restored)
    log = read_log(run_dir / "versions" / "versions.jsonl")
    assert [r["event"] for r in log] == ["version_created", "version_restored", "refused", "refused"]
    assert {r["run_id"] for r in log} == {state["run_id"]}
    assert "model.safetensors" in log[2]["error"]


def _refuse(config: Path, override: str) -> subprocess.Popen[str]:
    return subprocess.Popen(distill_command("--config", str(config), override), cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_with_a_changed_locked_key_is_refused(finished_run: tuple[Path, Path, dict],
                                                     tmp_path: Path) -> None:
    config, run_dir, project = finished_run
    copy = shutil.copytree(project["tokenizer"], tmp_path / "tokenizer-copy")
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    cases = {"data.max_length": "data.max_length=90", "tokenizer": f"tokenizer={copy}"}
    procs = {key: _refuse(config, override) for key, override in cases.items()}  # in parallel
    for key, proc in procs.items():
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 2, stderr[-2000:]
        assert f"config key {key!r} changed" in stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_resume_with_another_model_shape_is_refused(finished_run: tuple[Path, Path, dict]) -> None:
    config, _, _ = finished_run
    proc = _refuse(config, "student.hidden_size=48")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr[-2000:]
    assert "config key 'student' changed" in stderr
