"""Distill a real Hugging Face LLM (an imported artifact, e.g. SmolLM2-135M-Instruct) into a small student.

``python -m training.llm_pipeline --config configs/smollm2.yaml --out runs/smollm2`` (``make distill-smollm2``):

1. loads the teacher artifact (``make smollm2-teacher`` imports it from GGUF) and picks the compute dtype
   (``dtype: auto`` measures a bf16 and an fp32 matmul here and takes the faster: bf16 only pays on CPUs
   with native bf16 units such as AMX);
2. picks ``data.prompts`` prompts from the bundled bank (``assets/prompts``): exact and MinHash near-duplicates
   removed first, then a category-stratified deterministic sample;
3. has the teacher write a response to each prompt (greedy, through its chat template, KV-cached, resumable);
4. filters responses (length, repetition), splits train/val/test by hash and writes chat records with a
   lineage manifest (:mod:`training.prompt_bank.dataset`);
5. runs the teacher once over train + val into a top-k cache (:mod:`training.teacher_cache`), shared by all;
6. trains three students at equal steps and data: ``kd`` (teacher layers, sparse top-k KD + CE), ``ce_only``
   (teacher layers, CE on the teacher-written text) and ``scratch`` (random init, CE);
7. evaluates each on the held-out test conversations against the live teacher: ``val_kl`` (forward KL, nats
   per assistant token), ``top1_agreement`` and ``perplexity`` of the teacher's text; greedy samples;
8. writes ``OUT/report.json`` (+ ``report.md``), checks the KD student artifact in ``transformers``, and
   exports it to ONNX and Core ML.

Every step writes its output under ``OUT`` and is skipped when rerun with that output present (training
resumes from its checkpoints), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from training.config_base import StrictModel, read_yaml_mapping, validate_config
from training.generation import generate, left_pad
from training.kd.config import KDConfig
from training.kd.data_adapter import eval_batches
from training.kd.evaluation import evaluate_loss
from training.kd.trainer import KDTrainer
from training.model import Student
from training.ops.progress import progress
from training.pipeline import run_export
from training.prompt_bank.dataset import (
    DatasetConfig,
    build_dataset,
    file_source,
    read_prompts,
    write_dataset,
)
from training.prompt_bank.filters import NearDupConfig, exact_dedup, near_dedup
from training.student_init import select_layers
from training.teachers.cache_builder import CacheSettings, build_topk_cache
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.tokenizer import DistilleryTokenizer
from training.user_errors import user_error_exit

STUDENTS = ("kd", "ce_only", "scratch")
EXPORT_TIMEOUT_S = 1800


class DataPlan(StrictModel):
    prompts: int = Field(700, gt=0, description="prompts the teacher answers (after de-duplication)")
    bank: str = Field("assets/prompts/prompts.jsonl", description="prompt bank JSONL")
    max_new_tokens: int = Field(64, gt=0, description="longest teacher response, tokens")
    generate_batch: int = Field(16, gt=0, description="prompts decoded together")
    max_length: int = Field(192, gt=8, description="the trainer's data.max_length (longer records truncated)")
    val_frac: float = Field(0.06, gt=0, lt=0.5,
                            description="share of the filtered records held out for validation (split by hash)")
    test_frac: float = Field(0.08, gt=0, lt=0.5,
                             description="share of the filtered records held out for the test report (split by hash)")


class StudentPlan(StrictModel):
    every_k: int | None = Field(6, gt=0, description="keep teacher layers 0, k, 2k, ... and the last")
    layers: list[int] | None = Field(None, description="explicit teacher layers (instead of every_k)")


class TrainPlan(StrictModel):
    max_steps: int = Field(150, gt=0, description="optimizer steps of each of the three students")
    batch_size: int = Field(8, gt=0, description="conversations per batch")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    warmup_steps: int = Field(10, ge=0, description="optimizer steps of linear warmup")
    kd_weight: float = Field(1.0, ge=0, description="kd student: weight of the sparse top-k KD term")
    ce_weight: float = Field(0.5, ge=0,
                             description="kd student: weight of the CE term (ce_only and scratch train on CE alone)")
    top_k: int = Field(32, gt=0, description="teacher ids per position in the cache")


class EvalPlan(StrictModel):
    samples: int = Field(3, ge=0, description="held-out prompts decoded by every model for the report")
    sample_tokens: int = Field(48, gt=0, description="greedy tokens per report sample")
    batch_size: int = Field(8, gt=0, description="test conversations per evaluation batch")


class ExportPlan(StrictModel):
    onnx: bool = Field(True, description="export the KD student to ONNX and verify it")
    coreml: bool = Field(True, description="convert the KD student to Core ML and verify it")


class LLMPipelineConfig(StrictModel):
    teacher: str = Field(description="teacher artifact directory (make smollm2-teacher)")
    seed: int = Field(0, description="seed of prompt sampling, splits and training")
    threads: int | None = Field(None, gt=0, description="torch threads (default: torch's choice)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="compute dtype: auto (the faster of bfloat16 and float32 on this CPU, measured), float32 "
                            "or bfloat16")
    data: DataPlan = Field(DataPlan(), description="prompts, teacher responses and splits")
    student: StudentPlan = Field(StudentPlan(), description="which teacher layers the students copy")
    train: TrainPlan = Field(TrainPlan(), description="training budget shared by the three students")
    eval: EvalPlan = Field(EvalPlan(), description="evaluation and report samples")
    export: ExportPlan = Field(ExportPlan(), description="exports of the KD student")


def choose_dtype(requested: str, size: int = 512, repeats: int = 3) -> torch.dtype:
    """``auto``: time a ``size``² matmul in fp32 and bf16 here and return the faster dtype."""
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[requested]
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, dtype=dtype)
        a @ a
        start = time.perf_counter()
        for _ in range(repeats):
            a @ a
        timings[dtype] = time.perf_counter() - start
    return min(timings, key=timings.__getitem__)


def pick_prompts(bank: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """De-duplicate the bank (exact, then MinHash near-duplicates) and take ``n`` prompts round-robin over
    categories in a seeded order, so every category is represented evenly."""
    unique = near_dedup(exact_dedup(bank, key=lambda r: r["prompt"]), key=lambda r: r["prompt"],
                        config=NearDupConfig())
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in unique:
        by_category[str(record.get("category", ""))].append(record)
    rng = random.Random(seed)
    pools = [rng.sample(items, len(items)) for _, items in sorted(by_category.items())]
    chosen: list[dict[str, Any]] = []
    while len(chosen) < n and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return chosen


def chat_prompt_ids(tok: DistilleryTokenizer, prompt: str) -> list[int]:
    """One user turn rendered with the chat template (its own start tokens) and the generation prompt."""
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True))


def answer_text(tok: DistilleryTokenizer, new_ids: list[int]) -> tuple[str, bool]:
    """Generated ids -> (text up to eos, whether eos was reached)."""
    finished = tok.eos_id in new_ids
    ids = new_ids[:new_ids.index(tok.eos_id)] if finished else new_ids
    return tok.decode(ids, skip_special_tokens=True).strip(), finished


@torch.inference_mode()
def write_responses(model: Student, tok: DistilleryTokenizer, prompts: Sequence[dict[str, Any]], out: Path,
                    *, max_new_tokens: int, batch_size: int) -> dict[str, str]:
    """Greedy teacher responses through the chat template, appended to ``out`` as ``{"id", "response",
    "finished"}`` lines; ids already there are skipped (resume). Returns ``{id: response}``."""
    done: dict[str, str] = {}
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted run: regenerated below
            done[record["id"]] = record["response"]
    todo = [p for p in prompts if p["id"] not in done]
    encoded = {p["id"]: chat_prompt_ids(tok, p["prompt"]) for p in todo}
    todo.sort(key=lambda p: len(encoded[p["id"]]))  # similar lengths together: little padding
    with open(out, "a", encoding="utf-8") as fh:
        for start in progress(range(0, len(todo), batch_size), desc="teacher responses", unit="batch"):
            chunk = todo[start:start + batch_size]
            ids, mask = left_pad([encoded[p["id"]] for p in chunk], tok.pad_id)
            rows = generate(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                            eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)[:, ids.shape[1]:].tolist()
            for prompt, row in zip(chunk, rows, strict=True):
                done[prompt["id"]], finished = answer_text(tok, row)
                fh.write(json.dumps({"id": prompt["id"], "response": done[prompt["id"]], "finished": finished},
                                    ensure_ascii=False) + "\n")
            fh.flush()
    return done


def student_config(cfg: LLMPipelineConfig, name: str, out: Path, data: dict[str, Path], teacher_cfg: Any,
                   dtype: torch.dtype) -> KDConfig:
    """The KD config of one of the three students (equal steps, data and optimizer)."""
    layers = select_layers(teacher_cfg.num_hidden_layers, layers=cfg.student.layers, every_k=cfg.student.every_k)
    plan = cfg.train
    body: dict[str, Any] = {
        "out_dir": str(out / name), "seed": cfg.seed, "tokenizer": cfg.teacher,
        "data": {"train": [str(data["train"])], "val": [str(data["val"])], "max_length": cfg.data.max_length,
                 "batch_size": plan.batch_size, "truncate": True, "max_truncated_share": 1.0},
        "optim": {"lr": plan.lr, "warmup_steps": plan.warmup_steps, "max_steps": plan.max_steps},
        "eval": {"every": plan.max_steps, "max_batches": 4, "generate_examples": 0},
        "checkpoint": {"every": max(1, plan.max_steps // 3), "keep_last": 1},
        "bf16": dtype == torch.bfloat16, "num_threads": cfg.threads, "tensorboard": False,
        "card": {"name": f"distillery-{name}", "teacher": cfg.teacher},
    }
    if name in ("kd", "ce_only"):
        body["student_init"] = {"from_teacher": cfg.teacher, "layers": layers}
    else:
        body["student"] = {
            "hidden_size": teacher_cfg.hidden_size, "intermediate_size": teacher_cfg.intermediate_size,
            "num_hidden_layers": len(layers), "num_attention_heads": teacher_cfg.num_attention_heads,
            "num_key_value_heads": teacher_cfg.num_key_value_heads,
            "max_position_embeddings": teacher_cfg.max_position_embeddings,
            "tie_word_embeddings": teacher_cfg.tie_word_embeddings, "rope_theta": teacher_cfg.rope_theta}
    if name == "kd":
        body["teacher"] = {"kind": "cache", "path": str(out / "cache")}
        body["loss"] = {"kd_weight": plan.kd_weight, "ce_weight": plan.ce_weight}
    else:
        body["loss"] = {"kd_weight": 0.0, "ce_weight": 1.0}
    return KDConfig.model_validate(body)


@torch.inference_mode()
def held_out_metrics(model: Student, teacher: CheckpointTeacher, test: Path, tok: DistilleryTokenizer,
                     max_length: int, batch_size: int) -> dict[str, float]:
    """``val_kl`` (forward KL teacher ‖ student, nats per assistant token), ``top1_agreement`` and
    ``perplexity`` (exp of the CE on the teacher's held-out text) over every test conversation."""
    batches = eval_batches([str(test)], tok, max_length, batch_size, test.parent / "quarantine.test.jsonl")
    metrics = evaluate_loss(model, batches, teacher=teacher, max_batches=10**9)
    return {"val_kl": metrics["kd_loss"], "top1_agreement": metrics["top1_agreement"],
            "perplexity": float(torch.tensor(metrics["val_loss"]).exp()), "tokens": metrics["val_tokens"]}


@torch.inference_mode()
def samples(models: dict[str, Student], tok: DistilleryTokenizer, prompts: list[str], max_new_tokens: int
            ) -> list[dict[str, str]]:
    """Greedy answers of each model to each prompt (through the chat template)."""
    encoded = [chat_prompt_ids(tok, p) for p in prompts]
    ids, mask = left_pad(encoded, tok.pad_id)
    rows: list[dict[str, str]] = [{"prompt": p} for p in prompts]
    for name, model in models.items():
        out = generate(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_id,
                       pad_token_id=tok.pad_id)[:, ids.shape[1]:].tolist()
        for row, new in zip(rows, out, strict=True):
            row[name] = answer_text(tok, new)[0]
    return rows


def transformers_check(student_dir: Path, teacher_dir: Path) -> dict[str, Any]:
    """The KD student loads in ``transformers`` (same logits as ours) and its tokenizer gives the teacher's
    ids on a chat conversation."""
    try:
        import transformers
    except ImportError:
        return {"skipped": "transformers is not installed (the hf extra)"}
    conversation = [{"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(student_dir))
    ids = list(hf_tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"])
    teacher_tok = DistilleryTokenizer.load(teacher_dir)
    same_ids = ids == teacher_tok.encode(teacher_tok.apply_chat_template(conversation, add_generation_prompt=True))
    with torch.inference_mode():
        batch = torch.tensor([ids])
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(student_dir)).eval()(batch).logits
        ours = Student.from_pretrained(student_dir).eval()(batch)
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    return {"tokenizer_ids_equal_teacher": same_ids, "logits_rel_error": rel, "passed": same_ids and rel <= 1e-5}


def export(student_dir: Path, out: Path, plan: ExportPlan) -> dict[str, Any]:
    """Run the two conversion CLIs on the KD student (as ``make distill`` does); their exit codes and reports."""
    results: dict[str, Any] = {}
    if plan.onnx:
        results["onnx"] = run_export("conversion.export_onnx", student_dir, out / "onnx", EXPORT_TIMEOUT_S)
    if plan.coreml:
        results["coreml"] = run_export("conversion.convert_coreml", student_dir,
                                       out / "coreml" / "student.mlpackage", EXPORT_TIMEOUT_S)
    return results


def run(cfg: LLMPipelineConfig, out: Path) -> dict[str, Any]:
    """The whole pipeline (module docstring); returns the report also written to ``OUT/report.json``."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    dtype = choose_dtype(cfg.dtype)
    tok = DistilleryTokenizer.load(cfg.teacher)
    teacher = CheckpointTeacher(cfg.teacher, dtype=dtype)

    t0 = time.perf_counter()
    bank_path = Path(cfg.data.bank)
    chosen = pick_prompts(read_prompts(bank_path), cfg.data.prompts, cfg.seed)
    responses = write_responses(teacher.model, tok, chosen, out / "responses.jsonl",
                                max_new_tokens=cfg.data.max_new_tokens, batch_size=cfg.data.generate_batch)
    timings["teacher_responses"] = time.perf_counter() - t0

    data_dir = out / "data"
    data = {split: data_dir / f"{split}.jsonl" for split in ("train", "val", "test")}
    dataset_cfg = DatasetConfig(val_frac=cfg.data.val_frac, test_frac=cfg.data.test_frac)
    dataset = build_dataset(chosen, responses, dataset_cfg)
    write_dataset(dataset, data_dir, config=dataset_cfg,
                  sources=[file_source("prompt_bank", bank_path), file_source("teacher_responses",
                                                                            out / "responses.jsonl")])

    t0 = time.perf_counter()
    cache = build_topk_cache(teacher, [data["train"], data["val"]], out / "cache",
                             CacheSettings(k=cfg.train.top_k, max_length=cfg.data.max_length, truncate=True,
                                           positions="completion", batch_size=8),
                             teacher_description={"kind": "checkpoint", "path": cfg.teacher, "dtype": str(dtype)})
    timings["teacher_cache"] = time.perf_counter() - t0

    students: dict[str, dict[str, Any]] = {}
    models: dict[str, Student] = {}
    for name in STUDENTS:
        t0 = time.perf_counter()
        result = KDTrainer(student_config(cfg, name, out, data, teacher.model.config, dtype)).train()
        timings[f"train_{name}"] = time.perf_counter() - t0
        if result.status != "completed":
            raise RuntimeError(f"student {name} did not complete: {result.status}")
        models[name] = Student.from_pretrained(out / name / "student").eval()
        students[name] = {"params": sum(p.numel() for p in models[name].parameters()),
                          "train_tokens_per_second": round(result.tokens_per_second, 1),
                          "train_wall_seconds": round(result.wall_seconds, 1), "steps": result.step}

    t0 = time.perf_counter()
    judge = CheckpointTeacher(cfg.teacher, dtype=torch.float32)  # the reference distribution, full precision
    for name, model in models.items():
        students[name].update(held_out_metrics(model, judge, data["test"], tok, cfg.data.max_length,
                                               cfg.eval.batch_size))
    test_prompts = [json.loads(line)["messages"][0]["content"]
                    for line in data["test"].read_text(encoding="utf-8").splitlines()[:cfg.eval.samples]]
    sample_rows = samples({"teacher": judge.model, **models}, tok, test_prompts, cfg.eval.sample_tokens)
    timings["evaluation"] = time.perf_counter() - t0

    report: dict[str, Any] = {
        "teacher": {"path": cfg.teacher, "params": sum(p.numel() for p in teacher.model.parameters()),
                    "dtype": str(dtype).removeprefix("torch.")},
        "data": {"prompts": len(chosen), "responses": len(responses),
                 "splits": {k: len(v) for k, v in dataset.splits.items()},
                 "stages": [dataclasses.asdict(s) for s in dataset.stages],
                 "cache": {"totals": cache.totals, "kl": cache.kl, "top_k": cfg.train.top_k}},
        "students": students,
        "kd_beats_ce_only": bool(students["kd"]["val_kl"] < students["ce_only"]["val_kl"]
                                 and students["kd"]["top1_agreement"] > students["ce_only"]["top1_agreement"]),
        "samples": sample_rows,
        "transformers_check": transformers_check(out / "kd" / "student", Path(cfg.teacher)),
    }
    t0 = time.perf_counter()
    report["exports"] = export(out / "kd" / "student", out, cfg.export)
    timings["exports"] = time.perf_counter() - t0
    report["timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_table(report))
    return report


def render_table(report: dict[str, Any]) -> str:
    """The Markdown table of the three students (README format)."""
    lines = ["| student | params | val_kl (nats/token) | top1_agreement | perplexity |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in report["students"].items():
        lines.append(f"| {name} | {s['params'] / 1e6:.1f}M | {s['val_kl']:.3f} | {s['top1_agreement']:.3f} | "
                     f"{s['perplexity']:.2f} |")
    return "\n".join(lines) + f"\n\nteacher: {report['teacher']['params'] / 1e6:.1f}M params; " \
                              f"wall {report['wall_seconds'] / 60:.1f} min\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.llm_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pipeline YAML (e.g. configs/smollm2.yaml)")
    parser.add_argument("--out", required=True, help="output directory (rerun to resume)")
    parser.add_argument("--teacher", help="teacher artifact directory (overrides the config's)")
    return parser


@user_error_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raw = read_yaml_mapping(args.config)
    if args.teacher:
        raw["teacher"] = args.teacher
    cfg = validate_config(LLMPipelineConfig, raw, args.config)
    report = run(cfg, Path(args.out))
    print(render_table(report))
    print(json.dumps({k: report[k] for k in ("kd_beats_ce_only", "wall_seconds")}))
    return 0 if report["kd_beats_ce_only"] else 1


if __name__ == "__main__":
    sys.exit(main())
