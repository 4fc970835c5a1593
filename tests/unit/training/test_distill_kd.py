"""``python -m training.distill_kd``: the final JSON summary of a completed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kd_helpers import make_tiny_setup, tiny_config

from training import distill_kd


def test_a_completed_run_reports_its_quarantined_lines(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_tiny_setup(tmp_path, n_train=40, n_val=8, teacher=False)
    lines = paths["train"].read_text().splitlines()
    paths["train"].write_text("\n".join([*lines[:20], "{broken", *lines[20:], '{"prompt": 3}']) + "\n")
    cfg = tiny_config(paths, tmp_path / "run", teacher=None, optim={"max_steps": 2},
                      data={"max_bad_fraction": 0.1}, eval={"every": 100, "generate_examples": 0},
                      checkpoint={"every": 100, "keep_last": 1})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert distill_kd.main(["--config", str(config)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["status"] == "completed"
    assert summary["data"]["quarantined_lines"] == 2
    assert summary["data"]["examples"] == 40
    quarantine = Path(summary["data"]["quarantine_file"])
    assert len(quarantine.read_text().splitlines()) == 2
    assert "2 malformed training lines were quarantined" in captured.err and str(quarantine) in captured.err
