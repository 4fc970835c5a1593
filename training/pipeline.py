"""The bundled end-to-end pipeline behind ``make distill``.

``python -m training.pipeline --config configs/toy.yaml --out runs/toy`` does, on a bundled task:

1. loads the bundled teacher (``assets/teacher``, manifest verified) and its tokenizer;
2. generates data: a small labeled training set, a larger set of unlabeled prompts, and held-out
   validation and test prompts (never seen by the teacher either, see :mod:`training.data.toy_data`);
3. has the teacher write completions for the unlabeled prompts (sequence-level KD data);
4. distills a student: token-level KD (teacher logits) + CE on labeled and teacher-written data;
5. trains the same student shape from scratch (CE on the labeled data) for the same number of steps;
6. evaluates teacher, KD student and scratch student on the test split (greedy accuracy, val loss);
7. writes ``OUT/student`` (the KD student artifact), exports it to ONNX and CoreML, and writes
   ``OUT/report.json`` and a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, ValidationError

from conversion.coreml_report import ConversionStatus
from training.config_base import StrictModel, read_yaml_mapping, validation_problems
from training.data.toy_data import task_examples, write_jsonl
from training.kd.config import ConfigFileError, KDConfig
from training.kd.data_adapter import eval_batches
from training.kd.evaluation import evaluate_loss, evaluate_task, generate_completions
from training.kd.trainer import KDTrainer
from training.model import Student
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.user_errors import user_error_exit


class PipelineData(StrictModel):
    labeled: int = Field(1000, gt=0, description="examples with gold completions (both students)")
    unlabeled: int = Field(4000, ge=0, description="prompts completed by the teacher (KD student only)")
    val: int = Field(128, gt=0, description="held-out validation prompts (checkpoint selection)")
    test: int = Field(256, gt=0, description="held-out test prompts (the reported accuracy and val_loss)")
    max_length: int = Field(96, gt=1,
                            description="longest example in tokens; also the longest teacher-written and evaluated "
                                        "completion")


class PipelineTrain(StrictModel):
    max_steps: int = Field(600, gt=0, description="optimizer steps of each student (KD and scratch get the same)")
    batch_size: int = Field(32, gt=0, description="examples per batch")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    warmup_steps: int = Field(30, ge=0, description="optimizer steps of linear warmup")
    eval_every: int = Field(200, gt=0, description="evaluate every N optimizer steps (and at the end)")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (null: torch's default)")


class PipelineKD(StrictModel):
    divergence: str = Field("forward_kl",
                            description="KD divergence of the KD student (as loss.divergence: forward_kl, reverse_kl, "
                                        "jsd, skew_kl, skew_reverse_kl)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the KD term")
    kd_weight: float = Field(1.0, ge=0, description="weight of the KD term of the KD student")
    ce_weight: float = Field(0.5, ge=0,
                             description="weight of the CE term of the KD student (the scratch student uses CE alone, "
                                         "weight 1)")


class PipelineExport(StrictModel):
    onnx: bool = Field(True, description="export the KD student to ONNX and verify it")
    coreml: bool = Field(True, description="convert the KD student to Core ML and verify it")
    timeout_seconds: int = Field(300, gt=0, description="time limit of each export, seconds")


class PipelineConfig(StrictModel):
    """The bundled end-to-end pipeline (``configs/toy.yaml``): generated data, a KD and a scratch student
    with the same budget, evaluation and exports."""

    task: str = Field("arithmetic", description="bundled task the data is generated for (e.g. arithmetic)")
    teacher: str = Field("assets/teacher",
                         description="teacher artifact directory (manifest verified); also the tokenizer")
    seed: int = Field(0, description="seed of data generation and training")
    data: PipelineData = Field(PipelineData(), description="how many examples of each kind are generated")
    student: dict[str, Any] = Field(default_factory=dict, description="StudentShape fields")
    train: PipelineTrain = Field(PipelineTrain(), description="training budget shared by both students")
    kd: PipelineKD = Field(PipelineKD(), description="loss of the KD student")
    export: PipelineExport = Field(PipelineExport(), description="exports of the KD student")


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML config.

    Raises:
        ConfigFileError: naming the file, and every unknown or invalid key with its dotted path.
    """
    data = read_yaml_mapping(path, what="the pipeline config",
                             hint="; pass --config FILE (default configs/toy.yaml, relative to the repository root)")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(f"invalid pipeline config {path}: {validation_problems(exc)}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/toy.yaml")
    parser.add_argument("--out", default="runs/toy")
    parser.add_argument("--no-export", action="store_true", help="skip ONNX and CoreML exports")
    return parser


def prepare_data(cfg: PipelineConfig, teacher: CheckpointTeacher, out: Path) -> dict[str, Any]:
    """Write labeled/teacher-written/val/test JSONL files under ``out/data``; returns their paths and counts."""
    d = cfg.data
    labeled = task_examples(cfg.task, d.labeled + d.unlabeled, cfg.seed, heldout=False)
    gold, unlabeled = labeled[:d.labeled], labeled[d.labeled:]
    heldout = task_examples(cfg.task, d.val + d.test, cfg.seed + 1, heldout=True)
    val, test = heldout[:d.val], heldout[d.val:]
    data = out / "data"
    paths = {"labeled": data / "labeled.jsonl", "val": data / "val.jsonl", "test": data / "test.jsonl",
             "teacher_written": data / "teacher_written.jsonl"}
    write_jsonl(paths["labeled"], gold)
    write_jsonl(paths["val"], val)
    write_jsonl(paths["test"], test)
    written = 0
    if unlabeled:
        texts = generate_completions(teacher.model, teacher.tokenizer, [e["prompt"] for e in unlabeled],
                                     max_new_tokens=d.max_length, batch_size=128)
        records = []
        for example, text in zip(unlabeled, texts, strict=True):
            record = {"id": example["id"] + "-teacher", "prompt": example["prompt"], "completion": text,
                      "task": cfg.task, "source": "teacher"}
            records.append(record)
        written = write_jsonl(paths["teacher_written"], records)
    return {"paths": {k: str(v) for k, v in paths.items()},
            "counts": {"labeled": len(gold), "teacher_written": written, "val": len(val), "test": len(test)}}


def student_config(cfg: PipelineConfig, out: Path, name: str, teacher: bool, train_files: list[str],
                   val_file: str) -> KDConfig:
    """KD config of one student run (KD or scratch) with the shared budget."""
    t = cfg.train
    return KDConfig.model_validate({
        "out_dir": str(out / "runs" / name),
        "seed": cfg.seed,
        "tokenizer": cfg.teacher,
        "task": cfg.task,
        "student": cfg.student,
        "teacher": {"kind": "checkpoint", "path": cfg.teacher} if teacher else None,
        "data": {"train": train_files, "val": [val_file], "max_length": cfg.data.max_length,
                 "batch_size": t.batch_size, "shuffle_buffer": 4096},
        "loss": {"divergence": cfg.kd.divergence, "temperature": cfg.kd.temperature,
                 "kd_weight": cfg.kd.kd_weight, "ce_weight": cfg.kd.ce_weight if teacher else 1.0},
        "optim": {"lr": t.lr, "warmup_steps": t.warmup_steps, "max_steps": t.max_steps},
        "eval": {"every": t.eval_every, "generate_examples": 64, "max_new_tokens": cfg.data.max_length,
                 "best_metric": "val_loss", "best_mode": "min"},
        "checkpoint": {"every": t.max_steps, "keep_last": 1},
        "num_threads": t.num_threads,
        "resume": "never",
        "card": {"name": f"distillery-toy-{name}"},
    })


def evaluate_model(model: Student, teacher: CheckpointTeacher, cfg: PipelineConfig, test_path: str,
                   out: Path) -> dict[str, float]:
    """Accuracy (greedy) and val_loss (CE on gold completions) on the test split."""
    examples = [json.loads(line) for line in Path(test_path).read_text().splitlines() if line.strip()]
    batches = eval_batches([test_path], teacher.tokenizer, cfg.data.max_length, 64, out / "quarantine.test.jsonl")
    loss = evaluate_loss(model, batches, None, max_batches=10_000)
    task = evaluate_task(model, teacher.tokenizer, examples, cfg.task, cfg.data.max_length)
    return {"accuracy": task.get("accuracy", float("nan")), "val_loss": loss["val_loss"],
            **{k: v for k, v in task.items() if k != "accuracy"}}


def run_export(module: str, student_dir: Path, out_path: Path, timeout: int) -> dict[str, Any]:
    """Run a conversion CLI as a user would and collect its report.json."""
    cmd = [sys.executable, "-m", module, str(student_dir), "--out", str(out_path)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"passed": False, "error": f"timed out after {timeout}s", "command": " ".join(cmd)}
    seconds = time.perf_counter() - started
    report_candidates = [out_path / "report.json", out_path.with_suffix(".report.json"),
                         out_path.parent / "report.json"]
    report = next((json.loads(p.read_text()) for p in report_candidates if p.is_file()), None)
    summary: dict[str, Any] = {"command": " ".join(cmd), "exit_code": proc.returncode,
                               "seconds": round(seconds, 1), "passed": proc.returncode == 0}
    if report is not None:
        summary["report"] = report
    if proc.returncode != 0:
        summary["stderr_tail"] = proc.stderr[-2000:]
    return summary


def format_table(report: dict[str, Any]) -> str:
    rows = [("teacher", report["teacher"])] + [(f"student ({k})", v) for k, v in report["students"].items()]
    lines = ["| model | params | accuracy | val_loss |", "| --- | ---: | ---: | ---: |"]
    for name, entry in rows:
        lines.append(f"| {name} | {entry['params']:,} | {entry['accuracy']:.3f} | {entry['val_loss']:.4f} |")
    return "\n".join(lines)


def run_pipeline(cfg: PipelineConfig, out: Path, export: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    teacher = CheckpointTeacher(cfg.teacher)
    print(f"[1/5] teacher {cfg.teacher}: {teacher.model.num_parameters():,} parameters", flush=True)
    data = prepare_data(cfg, teacher, out)
    print(f"[2/5] data: {data['counts']}", flush=True)
    p = data["paths"]
    kd_files = [p["labeled"]] + ([p["teacher_written"]] if data["counts"]["teacher_written"] else [])
    runs = {"kd": student_config(cfg, out, "kd", True, kd_files, p["val"]),
            "scratch": student_config(cfg, out, "scratch", False, [p["labeled"]], p["val"])}
    trained: dict[str, Student] = {}
    train_info: dict[str, Any] = {}
    for i, (name, kd_cfg) in enumerate(runs.items()):
        print(f"[3/5] training student '{name}' ({i + 1}/{len(runs)})", flush=True)
        result = KDTrainer(kd_cfg).train()
        assert result.student_dir is not None
        trained[name] = Student.from_pretrained(result.student_dir)
        train_info[name] = {"steps": result.step, "wall_seconds": round(result.wall_seconds, 1),
                            "tokens_per_second": round(result.tokens_per_second, 1),
                            "train_files": kd_cfg.data.train, "data": result.data}
    print("[4/5] evaluating on the held-out test split", flush=True)
    report: dict[str, Any] = {"task": cfg.task, "data": data["counts"]}
    report["teacher"] = {**evaluate_model(teacher.model, teacher, cfg, p["test"], out),
                         "params": teacher.model.num_parameters()}
    report["students"] = {
        name: {**evaluate_model(model, teacher, cfg, p["test"], out), "params": model.num_parameters(),
               **train_info[name]}
        for name, model in trained.items()
    }
    report["params"] = {"teacher": report["teacher"]["params"], "student": trained["kd"].num_parameters()}
    report["kd_beats_scratch"] = report["students"]["kd"]["accuracy"] > report["students"]["scratch"]["accuracy"]
    student_dir = out / "student"
    trained["kd"].save_pretrained(
        student_dir, tokenizer=teacher.tokenizer,
        metrics={f"test_{k}": v for k, v in report["students"]["kd"].items() if isinstance(v, int | float)},
        card={"name": "distillery-toy-student",
              "description": f"A student distilled from the bundled teacher on the '{cfg.task}' task by `make distill`.",
              "data": data["counts"], "teacher": cfg.teacher,
              "losses": cfg.kd.model_dump(), "training": train_info["kd"],
              "limits": ["Toy model for the bundled task only.",
                         "Metrics are greedy decoding on held-out prompts never seen by teacher or student."]},
    )
    report["student_dir"] = str(student_dir)
    if export and (cfg.export.onnx or cfg.export.coreml):
        print("[5/5] exporting the KD student", flush=True)
        report["exports"] = {}
        if cfg.export.onnx:
            report["exports"]["onnx"] = run_export("conversion.export_onnx", student_dir, out / "onnx",
                                                   cfg.export.timeout_seconds)
        if cfg.export.coreml:
            report["exports"]["coreml"] = run_export("conversion.convert_coreml", student_dir,
                                                     out / "coreml" / "student.mlpackage", cfg.export.timeout_seconds)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    """Run the pipeline; exit code 0 done, 1 a blocking export failure, 2 a user error (one line)."""
    args = build_parser().parse_args(argv)
    cfg = load_pipeline_config(args.config)
    out = Path(args.out)
    report = run_pipeline(cfg, out, export=not args.no_export)
    print()
    print(format_table(report))
    print()
    for name, entry in report.get("exports", {}).items():
        status = "passed" if entry.get("passed") else "FAILED"
        print(f"export {name}: {status} in {entry.get('seconds', '?')}s ({entry.get('command')})")
    verdict = "KD student beats scratch" if report["kd_beats_scratch"] else "KD student does NOT beat scratch"
    print(f"{verdict}; report: {out / 'report.json'}; wall {report['wall_seconds']}s")
    failed = [name for name, entry in report.get("exports", {}).items() if not entry.get("passed")]
    for name in failed:
        entry = report["exports"][name]
        errors = entry.get("report", {}).get("errors") or [entry.get("error", "see stderr_tail in report.json")]
        print(f"WARNING: the {name} export did not pass its checks: {errors}", file=sys.stderr)
    # The pipeline's job is distillation; a failed export check is reported (above and in report.json) and
    # fails the run only when it means wrong outputs (ONNX fp32 mismatch or different greedy tokens).
    blocking = [name for name in failed if not _only_tolerance_exceeded(report["exports"][name])]
    return 1 if blocking else 0


def _only_tolerance_exceeded(entry: dict[str, Any]) -> bool:
    """True when an export's report says only tolerances were exceeded (``status`` ``tolerance_exceeded``,
    :class:`conversion.coreml_report.ConversionStatus`) while greedy tokens are identical."""
    report = entry.get("report") or {}
    checks = report.get("checks") or {}
    return report.get("status") == ConversionStatus.TOLERANCE_EXCEEDED and checks.get("greedy_tokens_identical") is True


if __name__ == "__main__":
    sys.exit(main())
