"""`make reasoning` end to end on a tiny config: every student trained and scored, int8 with and without QAT,
report.json / report.md written; the teacher is used only when its manifest exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from kd_helpers import make_tiny_setup

from training.kd.quant_qat_int8 import dequantize, load_int8
from training.reasoning.latent_model import load_latent_student
from training.reasoning_pipeline import STUDENTS, load_reasoning_config, main, resolve_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(teacher: str | None) -> dict:
    return {
        "teacher": teacher,
        "num_threads": 1,
        "seeds": [0, 1],
        "data": {"train": 96, "val": 8, "test": 12, "max_length": 80},
        "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "max_position_embeddings": 96},
        "train": {"batch_size": 8, "warmup_steps": 1, "steps": 10},
        "latent": {"steps_per_stage": 1, "final_stage_steps": 4, "batch_size": 8, "log_every": 1000},
        "judge": {"train_pairs": 40, "pretrain_steps": 2, "steps": 3, "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 1},
        "qat": {"start_fraction": 0.5},
        "eval": {"max_new_tokens": 16, "batch_size": 12},
    }


def test_pipeline_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = make_tiny_setup(tmp_path / "setup", teacher=True)
    config = tmp_path / "reasoning.yaml"
    config.write_text(yaml.safe_dump(tiny_config(str(setup["teacher"]))))
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"] == str(setup["teacher"]) and report["teacher_note"].startswith("KD from")
    assert report["seeds"] == [0, 1] and report["steps_per_student"] == 10
    assert set(report["students"]) == set(STUDENTS) == {
        "no_cot", "cot", "latent", "cot_corrupted", "process", "process_judge"}
    for name in STUDENTS:
        entry = report["students"][name]
        for key in ("accuracy_mean", "accuracy_std", "step_accuracy_mean", "mean_generated_tokens"):
            assert key in entry, (name, key)
        assert 0.0 <= entry["accuracy_mean"] <= 1.0 and entry["accuracy_std"] >= 0.0
        assert entry["mean_generated_tokens"] > 0
        # equal optimizer steps: every student, every seed
        assert entry["train_steps"] == [10] and len(entry["per_seed"]) == 2
        accs = [e["accuracy"] for e in entry["per_seed"]]
        assert entry["accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert report["students"]["no_cot"]["step_accuracy_mean"] is None
    latent = report["students"]["latent"]
    assert latent["mean_latent_positions"] == 3.0
    assert [e["train"]["cot_steps"] + e["train"]["curriculum_steps"] for e in latent["per_seed"]] == [10, 10]
    assert latent["per_seed"][0]["train"]["curriculum_steps"] == 6
    # stages 1 and 2 one step each, the rest of the curriculum at the last (all-latent) stage
    assert [(h["stage"], h["steps"]) for h in latent["per_seed"][0]["train"]["stages"]] == [(1, 1), (2, 1), (3, 4)]
    assert report["students"]["cot"]["per_seed"][0]["train"]["loss"] == "KD + CE"
    assert "judge" in report["students"]["process_judge"]["per_seed"][0]["train"]["loss"]
    assert 0.0 <= report["judge"]["pairwise_accuracy"] <= 1.0
    assert set(report["acceptance"]) >= {"latent_ge_no_cot_plus_0.15", "process_ge_cot_corrupted_plus_0.05"}
    for name in ("plain", "qat"):
        assert 0.0 <= report["int8"][name]["accuracy_mean"] <= 1.0
        seed0 = report["per_seed_int8"]["0"][name]
        state = load_int8(seed0["export"])
        assert state["model.layers.0.mlp.down_proj.weight"].dtype == torch.int8
        assert dequantize(state)["model.layers.0.mlp.down_proj.weight"].dtype == torch.float32
    qat = report["per_seed_int8"]["0"]["qat"]
    assert qat["train"]["qat_start_step"] == 5 and qat["train"]["qat_steps"] == 5
    assert qat["roundtrip_max_abs_logit_diff"] < 1e-4
    table = (out / "report.md").read_text()
    assert "| latent |" in table and "| process_judge |" in table and "| qat |" in table
    assert table.strip() in capsys.readouterr().out
    spec = load_latent_student(latent["per_seed"][0]["train"]["student_dir"]).spec
    assert spec.num_latents == 3 and spec.feedback == "post_norm"
    # a rerun into the same directory starts its trainers fresh (no stale checkpoint is resumed), and jobs run
    # in 2 worker processes give what the in-process run gave (each job sets its own seed and threads)
    config.write_text(yaml.safe_dump({**tiny_config(str(setup["teacher"])), "workers": 2}))
    assert main(["--config", str(config), "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["workers"] == 2 and report["workers"] == 1
    assert again["per_seed_int8"]["0"]["qat"]["train"]["qat_start_step"] == 5
    assert again["students"]["cot"]["train_steps"] == [10]
    for name in STUDENTS:
        for key in ("accuracy_mean", "mean_generated_tokens"):
            assert again["students"][name][key] == report["students"][name][key], (name, key)


def test_teacher_is_used_only_when_its_manifest_exists(tmp_path: Path) -> None:
    assert resolve_teacher(None)[0] is None
    teacher, note = resolve_teacher(str(tmp_path / "missing"))
    assert teacher is None and "manifest.json not found" in note
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "manifest.json").write_text("{}")
    assert resolve_teacher(str(tmp_path / "t"))[0] == str(tmp_path / "t")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"latent": {"steps_per_stage": 2, "stages": 3}}))
    with pytest.raises(ValueError, match="latent.stages"):
        load_reasoning_config(path)
    assert main(["--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert load_reasoning_config(Path(__file__).parents[2] / "configs" / "reasoning.yaml").latent.max_stage == 3


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("distill_mix", [True, False])
def test_pipeline_distills_from_a_teacher_cache(tmp_path: Path, distill_mix: bool) -> None:
    """With kd.cache_top_k the teacher runs once per training file into a top-k cache that every KD student
    (CoT and its forks, and with process.distill the corrupted-CoT and both process students) reads instead of
    the live teacher; with process.distill false the corrupted-mix students train on cross-entropy alone."""
    setup = make_tiny_setup(tmp_path / "setup", teacher=True)
    config = tmp_path / "reasoning.yaml"
    cfg = tiny_config(str(setup["teacher"]))
    config.write_text(yaml.safe_dump({**cfg, "seeds": [0], "kd": {"cache_top_k": 8}, "workers": 2,
                                      "process": {"distill": distill_mix}}))
    out = tmp_path / "out"
    assert main(["--config", str(config), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    mix = {"process_train"} if distill_mix else set()
    assert set(report["teacher_cache"]) == {"cot_train"} | mix
    assert all(c["k"] == 8 and c["kl"]["kl_full_mean"] >= 0 for c in report["teacher_cache"].values())
    for run, train in (("cot", "cot_train"), ("cot_qat", "cot_train"), ("cot_corrupted", "process_train"),
                       ("process", "process_train"), ("process_judge", "process_train")):
        state = json.loads(next((out / "seed_0" / "runs" / run).glob("checkpoints/*/trainer_state.json")).read_text())
        expected = {"kind": "cache", "path": str(out / "teacher_cache" / train)}
        assert state["locked"]["teacher"] == (expected if distill_mix or train == "cot_train" else None), run
    loss = report["students"]["cot_corrupted"]["per_seed"][0]["train"]["loss"]
    assert loss.startswith("KD + CE" if distill_mix else "cross-entropy")
    assert report["students"]["cot"]["train_steps"] == [10]
