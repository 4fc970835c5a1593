"""User errors: one ``error:`` line and exit code 2 from every command entry point; programming errors keep
their traceback (see :mod:`training.user_errors`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kd_helpers import make_tiny_setup, tiny_config

from training import distill_kd, pipeline
from training.artifact import ArtifactError
from training.user_errors import (
    USER_ERROR_EXIT,
    UserError,
    is_user_error,
    one_line,
    report_user_errors,
    user_error_exit,
)

REPO = Path(__file__).resolve().parents[3]


def _raise(exc: BaseException) -> int:
    raise exc


def _one_error_line(err: str) -> str:
    """The single line of ``err``, asserting it is an ``error:`` line and not a traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---- the mechanism -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [UserError("bad input; fix it"), ArtifactError("model.safetensors altered"),
                                 FileNotFoundError(2, "No such file or directory", "/nowhere/x.jsonl")])
def test_user_errors_become_one_line_and_exit_2(exc: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_user_error(exc)
    assert report_user_errors(lambda: _raise(exc)) == USER_ERROR_EXIT == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {one_line(exc)}"


def test_programming_errors_keep_their_traceback() -> None:
    for exc in (KeyError("step"), TypeError("unsupported operand"), ValueError("shape mismatch")):
        assert not is_user_error(exc)
        with pytest.raises(type(exc)):
            report_user_errors(lambda exc=exc: _raise(exc))


def test_traceback_env_shows_user_errors_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_TRACEBACK", "1")
    with pytest.raises(UserError):
        report_user_errors(lambda: _raise(UserError("x")))


def test_one_line_joins_lines_and_formats_os_errors() -> None:
    assert one_line(UserError("first\n  second\n")) == "first second"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/a/b")) == "/a/b: No such file or directory"
    assert one_line(UserError()) == "UserError"


def test_decorated_main_passes_through_its_exit_code() -> None:
    @user_error_exit
    def main(code: int) -> int:
        return code

    assert main(7) == 7


# ---- distill_kd: each user error is one line, exit 2 ---------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user-errors")
    paths = make_tiny_setup(root, n_train=48, n_val=8, teacher=False)
    lines = paths["train"].read_text().splitlines()
    bad = root / "bad.jsonl"
    bad.write_text("\n".join(lines[:10] + ["{not json"] * 10) + "\n")
    not_parquet = root / "train.parquet"
    not_parquet.write_text(paths["train"].read_text())
    return {**paths, "bad": bad, "not_parquet": not_parquet, "root": root}


def _config(project: dict[str, Path], tmp_path: Path, **overrides: object) -> Path:
    cfg = tiny_config(project, tmp_path / "run", teacher=None, optim={"max_steps": 2},
                      eval={"every": 100, "generate_examples": 0}, checkpoint={"every": 1, "keep_last": 2},
                      **overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _distill(config: Path, *overrides: str) -> int:
    return distill_kd.main(["--config", str(config), *overrides])


def test_data_quality_failure(project: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _distill(_config(project, tmp_path), f"data.train=[{project['bad']}]") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "10 of 20 records" in line and "quarantine" in line and "max_bad_fraction" in line


def test_missing_data_file(project: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert _distill(_config(project, tmp_path), f"data.train=[{missing}]") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(missing) in line and "fix the path" in line


def test_a_parquet_file_that_is_not_parquet_is_named(project: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _distill(_config(project, tmp_path), f"data.train=[{project['not_parquet']}]") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(project["not_parquet"]) in line and "not a readable Parquet file" in line


def test_missing_tokenizer_and_teacher(project: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(project, tmp_path)
    assert _distill(config, f"tokenizer={tmp_path / 'no-tokenizer'}") == 2
    assert "tokenizer.json" in _one_error_line(capsys.readouterr().err)
    assert _distill(config, f"teacher={{kind: checkpoint, path: {tmp_path / 'no-teacher'}}}") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "no-teacher") in line and "teacher.path" in line


def test_changed_data_under_an_existing_out_dir_and_a_damaged_resume(
        project: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "train.jsonl"
    shutil.copy(project["train"], data)
    config = _config(project, tmp_path, data={"train": [str(data)], "val": []})
    assert _distill(config, "--stop-after-steps", "1") == 0
    capsys.readouterr()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000001"
    assert checkpoint.is_dir()

    data.write_text("\n".join(data.read_text().splitlines()[:-3]) + "\n")  # the data changed
    assert _distill(config) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "['sizes']" in line and "changed since the checkpoint" in line and "resume=never" in line

    damaged = shutil.copytree(checkpoint, tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes(b"garbage")
    assert _distill(config, f"resume={damaged}", f"out_dir={tmp_path / 'run2'}") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot resume from {damaged}" in line and "model.safetensors" in line


def test_the_real_command_prints_one_line_without_traceback(project: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "training.distill_kd", "--config", str(_config(project, tmp_path)),
                           f"data.train=[{tmp_path / 'nope.jsonl'}]"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2
    assert "nope.jsonl" in _one_error_line(proc.stderr)


# ---- pipeline ------------------------------------------------------------------------------------------------
def test_pipeline_missing_config_and_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pipeline.main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "missing.yaml" in line and "--config" in line
    config = tmp_path / "typo.yaml"
    config.write_text(json.dumps({"train": {"max_stepz": 3}}))
    assert pipeline.main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "train.max_stepz" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
