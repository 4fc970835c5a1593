"""Non-finite floats (``.inf``, ``.nan``) anywhere in a KD config are refused at validation (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.kd.config import ConfigFileError, load_config


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "out"), "tokenizer": str(tmp_path / "tok"),
                                    "data": {"train": ["train.jsonl"]}}))
    return path


def test_finite_config_still_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path), ["optim.lr=1e-3", "card.note=1.5"])
    assert cfg.optim.lr == 1e-3 and cfg.card == {"note": 1.5}


@pytest.mark.parametrize("override", [
    "optim.lr=.inf", "optim.lr=.nan", "optim.lr=nan", "optim.lr=inf", "optim.clip_grad_norm=.inf",
    "optim.betas=[0.9, .nan]", "loss.temperature=.inf", "loss.kd_weight=.inf", "student.rope_theta=.inf",
    "data.max_bad_fraction=.nan", "teacher={kind: http, url: u, model: m, tokenizer: t, timeout_s: .inf}",
])
def test_non_finite_floats_are_rejected(tmp_path: Path, override: str) -> None:
    key = override.split("=", 1)[0].split(".")[0]
    with pytest.raises(ConfigFileError, match=key):
        load_config(_write(tmp_path), [override])


def test_non_finite_float_in_card_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"card\.limits\[1\]"):
        load_config(_write(tmp_path), ["card.limits=[1.0, .inf]"])
