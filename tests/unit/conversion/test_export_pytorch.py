"""torch.export programs (prefill.pt2, decode.pt2) of the tiny artifact, verified after loading back."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conversion.export_pytorch import (
    DECODE_FILE,
    PREFILL_FILE,
    PytorchExportConfig,
    export_pytorch,
    main,
    program_step,
    quiet_export,
)
from conversion.verify_common import DEFAULT_PROMPTS, eager_step, encode_prompts, pad_prompts, verify_step
from training.artifact import ArtifactError, verify_manifest
from training.model import Student

ATOL = 1e-4
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def exported(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("pt2") / "export"
    return out, export_pytorch(PytorchExportConfig(student_dir=tiny_artifact, out=out, max_new_tokens=6,
                                                   decode_steps=2, threads=1))


@pytest.fixture(scope="module")
def programs(exported: tuple[Path, dict[str, Any]]) -> tuple[Any, Any]:
    out, _ = exported
    with quiet_export():
        return torch.export.load(str(out / PREFILL_FILE)), torch.export.load(str(out / DECODE_FILE))


@pytest.fixture(scope="module")
def student(tiny_artifact: Path) -> Student:
    return Student.from_pretrained(str(tiny_artifact))


def test_report_passes_and_lists_dynamic_dims(exported: tuple[Path, dict[str, Any]]) -> None:
    out, report = exported
    checks = report["checks"]
    assert report["passed"] is True
    assert checks["max_abs_error"] <= ATOL and checks["max_abs_error_present"] <= ATOL
    assert checks["greedy_tokens_identical"] is True
    assert checks["decode_steps_checked"] == 4 * 2  # 4 batches x 2 decode steps, no chunk step
    prefill, decode = report["programs"]["prefill"], report["programs"]["decode"]
    assert prefill["dynamic_dims"]["batch_size"]["min"] == 1
    assert prefill["dynamic_dims"]["sequence_length"]["min"] == 1
    assert decode["dynamic_dims"]["past_sequence_length"]["min"] == 1
    assert all(d["max"] is None for p in (prefill, decode) for d in p["dynamic_dims"].values())
    names = [i["name"] for i in decode["inputs"]]
    assert names[:3] == ["input_ids", "attention_mask", "past_key_values.0.key"]
    assert decode["outputs"][1]["shape"][2] == "past_sequence_length + 1"
    assert json.loads((out / "report.json").read_text()) == report
    assert {PREFILL_FILE, DECODE_FILE, "tokenizer.json", "report.json"} <= set(verify_manifest(out)["files"])


@pytest.mark.parametrize("lengths", [(1,), (8,), (8, 5, 2)], ids=["b1_t1", "b1_t8", "b3_left_padded"])
def test_loaded_programs_match_eager_over_decode_steps(programs: tuple[Any, Any], student: Student,
                                                       lengths: tuple[int, ...]) -> None:
    step = program_step(*programs)
    reference = eager_step(student)
    cfg = student.config
    rng = np.random.default_rng(0)
    ids, mask = pad_prompts([rng.integers(3, cfg.vocab_size, n).tolist() for n in lengths], cfg.pad_token_id)
    got, got_cache = step(ids, mask, None)
    want, want_cache = reference(ids, mask, None)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    for _ in range(3):  # the first decode step has past length = prompt length (1 for b1_t1)
        token = want[:, -1].argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        got, got_cache = step(token, mask, got_cache)
        want, want_cache = reference(token, mask, want_cache)
        assert got_cache[0].shape == (len(lengths), cfg.num_key_value_heads, mask.shape[1], cfg.head_dim)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_decode_program_enforces_its_shape_contract(programs: tuple[Any, Any], student: Student) -> None:
    _, decode = programs
    cfg = student.config
    shape = (2, cfg.num_key_value_heads, 4, cfg.head_dim)
    past = [torch.zeros(shape) for _ in range(2 * cfg.num_hidden_layers)]
    ids = torch.tensor([[5], [6]])
    out = decode.module()(ids, torch.ones(2, 5, dtype=torch.long), *past)
    assert out[0].shape == (2, 1, cfg.vocab_size)
    with pytest.raises((RuntimeError, AssertionError)):  # the mask must be past + 1 long
        decode.module()(ids, torch.ones(2, 7, dtype=torch.long), *past)
    with pytest.raises(ValueError, match="one token"):
        program_step(*programs)(np.ones((2, 2), np.int64), np.ones((2, 6), np.int64),
                                [p.numpy() for p in past])


def test_verifier_catches_a_torch_weight_changed_after_export(programs: tuple[Any, Any],
                                                              student: Student) -> None:
    changed = copy.deepcopy(student)
    with torch.no_grad():
        changed.model.layers[1].self_attn.v_proj.weight[0, 0] += 0.5
    prompts = encode_prompts(None, DEFAULT_PROMPTS[:2], student.config.vocab_size)
    checks, _ = verify_step(changed, program_step(*programs), prompts, atol=ATOL, max_new_tokens=3,
                            decode_steps=1, chunk=0)
    assert not checks.passed and checks.max_abs_error > ATOL


def test_tampered_artifact_is_refused(tiny_artifact: Path, tmp_path: Path, capsys: Capsys) -> None:
    bad = tmp_path / "tampered"
    shutil.copytree(tiny_artifact, bad)
    config = json.loads((bad / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="config.json"):
        Student.from_pretrained(str(bad))
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_lists_the_flags(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--max-new-tokens", "--prompts", "--atol", "--decode-steps"):
        assert flag in text
