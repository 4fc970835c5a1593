"""The judge training config and CLI edges: validation messages, --out, --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.judge_training.config import ConfigFileError, JudgeTrainConfig, load_config
from arbiter.judge_training.train import batch_order, build_parser, main

REPO = Path(__file__).resolve().parents[3]


def test_bundled_config_is_valid_and_out_overrides() -> None:
    cfg = load_config(REPO / "configs" / "judge.yaml", out_dir=Path("elsewhere"))
    assert cfg.out_dir == Path("elsewhere")
    assert cfg.num_threads == 1 and cfg.heads.step_head and cfg.heads.clauses
    assert cfg.data.dir is None and cfg.pretrain.steps > 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("optim: {max_step: 3}", "optim.max_step: Extra inputs are not permitted"),
        ("optim: {lr: -1}", "optim.lr: Input should be greater than 0"),
        ("init_from: x\nbackbone: {hidden_size: 32}", "init_from and backbone exclude each other"),
        ("heads: {clauses: []}\neval: {selection: clause_f1}", "heads.clauses is empty"),
        ("heads: {step_head: false}\neval: {selection: step_auroc}", "heads.step_head is false"),
        ("data: {mix: {bogus: 1}}", "unknown pair kinds"),
        ("- 1\n- 2", "must be a mapping"),
        ("a: [", "cannot read the config"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and reason in str(caught.value)


def test_cli_help_and_bad_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--help"])
    assert caught.value.code == 0
    assert "--config" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1]\n")
    assert main(["--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "seed" in capsys.readouterr().err
    missing_data = tmp_path / "data.yaml"
    missing_data.write_text(f"data: {{dir: {tmp_path / 'nowhere'}}}\n")
    assert main(["--config", str(missing_data), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_batch_order_covers_every_pair_each_epoch() -> None:
    batches = batch_order(10, 3, seed=0)
    epoch = [next(batches) for _ in range(3)]
    flat = [i for batch in epoch for i in batch]
    assert all(len(b) == 3 for b in epoch) and len(set(flat)) == 9
    small = batch_order(2, 8, seed=0)
    assert sorted(next(small)) == [0, 1]
    assert JudgeTrainConfig().backbone_shape().hidden_size == 96
