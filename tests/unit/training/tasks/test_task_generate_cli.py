"""Tests for ``python -m training.tasks.generate``: outputs, prompt-disjoint splits, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.tasks.generate import main

SPLITS = ("train", "val", "test")


def _read(directory: Path) -> dict[str, list[dict]]:
    return {
        name: [json.loads(line) for line in (directory / f"{name}.jsonl").read_text("utf-8").splitlines()]
        for name in SPLITS
    }


@pytest.mark.parametrize(("task", "n"), [("arithmetic", 400), ("toolcall", 600), ("eightball", 800)])
def test_cli_writes_disjoint_splits(tmp_path: Path, task: str, n: int) -> None:
    assert main(["--task", task, "--n", str(n), "--seed", "0", "--out", str(tmp_path)]) == 0
    data = _read(tmp_path)
    assert sum(len(records) for records in data.values()) == n
    prompts = {name: {r["prompt"] for r in records} for name, records in data.items()}
    assert all(prompts[name] for name in SPLITS)
    assert not prompts["train"] & prompts["val"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]
    ids = [r["id"] for records in data.values() for r in records]
    assert len(ids) == len(set(ids))
    assert all(r["task"] == task for records in data.values() for r in records)
    distinct = sum(len(p) for p in prompts.values())
    for name in ("val", "test"):
        assert abs(len(prompts[name]) - 0.1 * distinct) <= 1


def test_cli_is_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    args = ["--task", "arithmetic", "--n", "200", "--val-frac", "0.2", "--test-frac", "0.05"]
    main([*args, "--seed", "1", "--out", str(tmp_path / "a")])
    main([*args, "--seed", "1", "--out", str(tmp_path / "b")])
    main([*args, "--seed", "2", "--out", str(tmp_path / "c")])
    for name in SPLITS:
        first = (tmp_path / "a" / f"{name}.jsonl").read_bytes()
        assert first == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
        assert first != (tmp_path / "c" / f"{name}.jsonl").read_bytes()


def test_cli_zero_fractions_put_everything_in_train(tmp_path: Path) -> None:
    main(["--task", "eightball", "--n", "50", "--val-frac", "0", "--test-frac", "0", "--out", str(tmp_path)])
    data = _read(tmp_path)
    assert len(data["train"]) == 50 and data["val"] == [] and data["test"] == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--val-frac", "0.6", "--test-frac", "0.5"],
        ["--val-frac", "-0.1"],
        ["--n", "0"],
        ["--task", "chess"],
    ],
)
def test_cli_rejects_bad_arguments(tmp_path: Path, extra: list[str]) -> None:
    base = ["--task", "arithmetic", "--n", "20", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as excinfo:
        main([*base, *extra])
    assert excinfo.value.code == 2
    assert not (tmp_path / "train.jsonl").exists()


def test_module_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.tasks.generate", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[4],
    )
    assert result.returncode == 0
    for flag in ("--task", "--n", "--seed", "--out", "--val-frac", "--test-frac"):
        assert flag in result.stdout
