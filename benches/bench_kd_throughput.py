"""KD training throughput: Distillery's trainer vs a plain torch loop vs TRL's GKDTrainer, side by side.

    .venv/bin/python benches/bench_kd_throughput.py [--quick] [--only small|real] [--threads 2]

(``make bench-venv`` first for the TRL column: it builds ``.venv-bench`` with torch 2.13.0, trl, transformers,
datasets and accelerate; without it the TRL column says "not run". TRL is never a dependency of the project.)

Same random Llama shapes and the same teacher weights for all three implementations; forward KL at T=1
only (kd_weight 1, no CE), AdamW lr 1e-4, clip 1.0, B=8. Each implementation runs in its own subprocess
(so peak RSS is per process), alternating implementations within every repeat, and writes its own step
log (step end times); tokens/s = B*T*(N-2) / (end of step N - end of step 2). Reported figures are
medians over the repeats. MFU = model FLOP/s / the matmul peak of the same dtype, measured in this run.

Configs: teacher hidden 256, 4 layers, head_dim 64, MLP 4x, untied; student hidden 128, 2 layers; V=2048;
T=128 and T=512, fp32 and bf16. Real shape: a SmolLM2-135M-shaped teacher (hidden 576, 30 layers, 9/3 heads,
intermediate 1536, V=49,152, tied) and a 6-layer student of the same width (~49M parameters), T=512, bf16;
Distillery uses the chunked KD loss there (teacher logits never materialized). Random weights of those
shapes are used unless ``--teacher DIR`` names a real SmolLM2 artifact (the result file says which).

Worker mode (internal): ``bench_kd_throughput.py worker IMPL SPEC.json`` runs one implementation and prints
one JSON line with its step end times and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
IMPLS = ("distillery", "plain", "trl")

SMALL_TEACHER = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "tie_word_embeddings": False}
SMALL_STUDENT = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "num_key_value_heads": 2, "tie_word_embeddings": False}
REAL_TEACHER = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "tie_word_embeddings": True}
REAL_STUDENT = {**REAL_TEACHER, "num_hidden_layers": 6}


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- workers (run in subprocesses) ----------------------------------------------------------------------
def _llama_config(shape: dict[str, Any], vocab: int, seq: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, max_position_embeddings=max(seq, 512), rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0, **shape)


def _batches(spec: dict[str, Any]) -> Any:
    """(N*B, T) token ids written by the parent (the same for the plain loop and TRL)."""
    import torch

    return torch.load(spec["ids"])


def worker_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """A hand-written KD loop over Hugging Face Llama models: teacher forward under no_grad, student
    forward/backward, forward KL at T=1 in fp32, AdamW lr 1e-4, clip 1.0; bf16 via autocast."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    ids = _batches(spec)
    teacher = LlamaForCausalLM.from_pretrained(spec["hf_teacher"], attn_implementation="sdpa").eval()
    student = LlamaForCausalLM(_llama_config(spec["student"], spec["vocab"], spec["seq"])).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    b, bf16 = spec["batch"], spec["bf16"]
    times = []
    for step in range(spec["steps"]):
        x = ids[step * b:(step + 1) * b]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits
            s_logits = student(input_ids=x).logits
        s_logp = F.log_softmax(s_logits[:, :-1].float(), dim=-1)
        t_logp = F.log_softmax(t_logits[:, :-1].float(), dim=-1)
        loss = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(json.dumps({"step": step + 1, "loss": float(loss)}), file=sys.stderr)
        times.append(time.perf_counter())
    return {"times": times}


def worker_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """TRL's GKDTrainer with lmbda=0 (no student generations) and beta=0 (forward KL), on pre-tokenized rows."""
    import torch
    from datasets import Dataset
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

    try:
        from trl import GKDConfig, GKDTrainer
    except ImportError:  # newer TRL moved GKD to trl.experimental
        from trl.experimental.gkd import GKDConfig, GKDTrainer  # type: ignore[no-redef]

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    ids = _batches(spec)
    b, n = spec["batch"], spec["steps"]
    rows = ids[: b * n]
    data = Dataset.from_dict({"input_ids": rows.tolist(), "attention_mask": torch.ones_like(rows).tolist(),
                              "labels": rows.tolist()})
    teacher = LlamaForCausalLM.from_pretrained(spec["hf_teacher"], attn_implementation="sdpa")
    student = LlamaForCausalLM(_llama_config(spec["student"], spec["vocab"], spec["seq"]))
    tok = PreTrainedTokenizerFast.from_pretrained(spec["hf_teacher"])
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ARG002
            times.append(time.perf_counter())

    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: torch.tensor([e[k] for e in examples]) for k in ("input_ids", "attention_mask", "labels")}

    args = GKDConfig(output_dir=spec["out"], per_device_train_batch_size=b, max_steps=n, learning_rate=1e-4,
                     lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, lmbda=0.0, beta=0.0,
                     temperature=1.0, bf16=spec["bf16"], gradient_checkpointing=spec["bf16"],
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                     dataloader_num_workers=0, remove_unused_columns=False,
                     dataset_kwargs={"skip_prepare_dataset": True}, max_length=spec["seq"])
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                         processing_class=tok, data_collator=collate, callbacks=[StepTimes()])
    trainer.train()
    return {"times": times, "trl_log": trainer.state.log_history[:3]}


def worker_distillery(spec: dict[str, Any]) -> dict[str, Any]:
    """``python -m training.distill_kd --config SPEC`` in this process; step end times from its train.jsonl."""
    sys.path.insert(0, str(ROOT))
    from training.distill_kd import main

    rc = main(["--config", spec["config"], *spec.get("overrides", [])])
    if rc != 0:
        raise SystemExit(f"distill_kd exited {rc}")
    log = Path(spec["out"]) / "logs" / "train.jsonl"
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    train = [r for r in recs if r["event"] == "train"]
    compiled = next((r for r in recs if r["event"] == "compiled"), {})
    return {"times": [r["time"] for r in train], "loss": [r["loss"] for r in train][-1:],
            "compile_seconds": compiled.get("compile_seconds")}


def worker_main(impl: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    fn = {"plain": worker_plain, "trl": worker_trl, "distillery": worker_distillery}[impl]
    result = fn(spec)
    result["rss_mib"] = _peak_rss_mib()
    print("RESULT " + json.dumps(result))
    return 0


# ---- setup (parent) ----------------------------------------------------------------------------------------
def make_setup(root: Path, vocab: int, seq: int, batch: int, steps: int, real: bool,
               teacher_dir: str | None) -> dict[str, Any]:
    """Tokenizer, teacher artifact (Distillery + Hugging Face copies of the same weights), data and ids."""
    import torch

    sys.path.insert(0, str(ROOT))
    from training.model import Student
    from training.model_config import ModelConfig
    from training.tokenizer import DistilleryTokenizer

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7)))
             for _ in range(3000)]
    texts = [" ".join(rng.choice(words) for _ in range(seq * 2)) for _ in range(batch * steps + batch)]
    tok_dir = root / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        DistilleryTokenizer.train(texts[:200], vocab_size=min(vocab, 2048)).save(tok_dir)
    tok = DistilleryTokenizer.load(tok_dir)
    t_shape = REAL_TEACHER if real else SMALL_TEACHER
    teacher = root / "teacher"
    if teacher_dir is None and not (teacher / "manifest.json").exists():
        torch.manual_seed(123)
        cfg = ModelConfig(vocab_size=vocab, max_position_embeddings=max(seq, 512), bos_token_id=tok.bos_id,
                          eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **t_shape)
        Student(cfg).to(torch.bfloat16 if real else torch.float32).save_pretrained(teacher, tokenizer=tok)
    teacher_path = Path(teacher_dir) if teacher_dir else teacher
    hf_teacher = root / "hf_teacher"
    if not (hf_teacher / "config.json").exists():
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        t_model = Student.from_pretrained(str(teacher_path))
        c = t_model.config
        hf = LlamaForCausalLM(LlamaConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads, tie_word_embeddings=c.tie_word_embeddings,
            max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
            rope_theta=c.rope_theta, bos_token_id=1, eos_token_id=2, pad_token_id=0))
        missing = hf.load_state_dict({k: v.float() for k, v in t_model.state_dict().items()}, strict=False)
        assert not [k for k in missing.missing_keys if "lm_head" not in k], missing
        hf.save_pretrained(hf_teacher)
        PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"), pad_token="<pad>"
                                if "<pad>" in tok._tok.get_vocab() else None).save_pretrained(hf_teacher)
    train = root / "train.jsonl"
    ids_path = root / "ids.pt"
    if ids_path.exists() and torch.load(ids_path).shape[0] < batch * steps:  # made for fewer steps: redo both
        ids_path.unlink()
        train.unlink(missing_ok=True)
    if not train.exists():
        with train.open("w") as fh:
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": str(i), "prompt": "", "completion": text}) + "\n")
    if not ids_path.exists():
        rows = [tok.encode(t, add_bos=True)[:seq] for t in texts[: batch * steps]]
        assert all(len(r) == seq for r in rows), "texts shorter than T tokens"
        torch.save(torch.tensor(rows), ids_path)
    return {"tokenizer": str(tok_dir), "teacher": str(teacher_path), "hf_teacher": str(hf_teacher),
            "train": str(train), "ids": str(ids_path), "real_teacher": teacher_dir is not None}


def distillery_config(setup: dict[str, Any], out: Path, seq: int, batch: int, steps: int, bf16: bool, real: bool,
                      threads: int, extra: dict[str, Any]) -> dict[str, Any]:
    import yaml

    student = {**(REAL_STUDENT if real else SMALL_STUDENT), "max_position_embeddings": max(seq, 512)}
    cfg: dict[str, Any] = {
        "out_dir": str(out), "seed": 0, "tokenizer": setup["tokenizer"], "student": student,
        "teacher": {"kind": "checkpoint", "path": setup["teacher"],
                    **({"dtype": "bfloat16"} if bf16 else {})},
        "data": {"train": [setup["train"]], "max_length": seq, "batch_size": batch, "truncate": True,
                 "max_truncated_share": 1.0, "shuffle_buffer": 64},
        "loss": {"kd_weight": 1.0, "ce_weight": 0.0, "divergence": "forward_kl", "temperature": 1.0,
                 "chunked": real},
        "optim": {"lr": 1e-4, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0, "max_steps": steps,
                  "min_lr_ratio": 1.0, "clip_grad_norm": 1.0},
        "eval": {"every": 10_000, "max_batches": 1, "generate_examples": 0},
        "checkpoint": {"every": 10_000, "keep_last": 1},
        "bf16": bf16, "num_threads": threads, "progress": False, "resume": "never",
    }
    for key, value in extra.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return {"config": str(path), "out": str(out)}


def run_worker(impl: str, spec: dict[str, Any], work: Path, timeout: float) -> dict[str, Any] | None:
    """One implementation in its own subprocess; None when it cannot run (TRL venv missing) or failed."""
    python = str(BENCH_PY) if impl == "trl" else sys.executable
    if impl == "trl" and not BENCH_PY.exists():
        return None
    spec_path = work / f"{impl}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, str(Path(__file__).resolve()), "worker", impl, str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"[{impl}] failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])


def tokens_per_second(times: list[float], batch: int, seq: int) -> float:
    """B*T*(N-2) / (t_N - t_2) from the step end times t_1..t_N."""
    n = len(times)
    return batch * seq * (n - 2) / (times[-1] - times[1])


def model_flops_per_token(teacher: dict[str, Any], student: dict[str, Any], vocab: int, seq: int) -> float:
    """Teacher forward (2x) + student forward/backward (6x) matmul FLOPs per token, attention included
    (causal: half of the T x T scores), embeddings excluded, output head included."""
    def per_layer(s: dict[str, Any]) -> tuple[float, float]:
        h, i = s["hidden_size"], s["intermediate_size"]
        hd = h // s["num_attention_heads"]
        kv = s["num_key_value_heads"] * hd
        params = h * h * 2 + h * kv * 2 + 3 * h * i
        attn = 2 * seq * h / 2  # QK^T and PV per token, causal half, as params-equivalent (x2 below)
        return params * s["num_hidden_layers"] + vocab * h, attn * s["num_hidden_layers"]

    tp, ta = per_layer(teacher)
    sp, sa = per_layer(student)
    return 2 * (tp + ta) + 6 * (sp + sa)


def matmul_peak(dtype_name: str, threads: int) -> float:
    """FLOP/s of a 2048^2 matmul in the dtype (median of 5 after 2 warm-ups), as benches/bench_precision.py;
    512^2 for bf16 on a CPU without AVX-512/AMX, where a bf16 2048^2 matmul takes seconds."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    n = 2048 if dtype_name == "fp32" or torch.backends.cpu.get_cpu_capability() != "AVX2" else 512
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        samples.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer steps (small configs)")
    parser.add_argument("--only", choices=("small", "real", "all"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher", default=None, help="a real SmolLM2-135M Distillery artifact for the real shape")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench_kd"))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--configs", default="", help="comma-separated config names to keep, e.g. 'T=128 fp32'")
    parser.add_argument("--force-bf16", action="store_true",
                        help="run the bf16 configs even where a bf16 matmul is slower than fp32")
    parser.add_argument("--distillery-extra", default="{}", help="JSON merged into the Distillery config")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / "kd_throughput.md"))
    args = parser.parse_args()
    impls = [x for x in args.impls.split(",") if x]
    extra = json.loads(args.distillery_extra)
    work = Path(args.work)
    batch = 8
    configs: list[dict[str, Any]] = []
    if args.only in ("small", "all"):
        for seq in (128, 512):
            for bf16 in (False, True):
                runs = 1 if (args.quick or seq == 512) else 3
                steps = (6 if args.quick else 10) if seq == 512 else (10 if args.quick else 20)
                configs.append({"name": f"T={seq} {'bf16' if bf16 else 'fp32'}", "seq": seq, "bf16": bf16,
                                "real": False, "runs": runs, "steps": steps, "vocab": 2048, "impls": impls})
    if args.only in ("real", "all"):
        configs.append({"name": "real shape T=512 bf16", "seq": 512, "bf16": True, "real": True, "runs": 1,
                        "steps": 5, "vocab": 49152, "impls": impls})
        configs.append({"name": "real shape T=512 fp32", "seq": 512, "bf16": False, "real": True, "runs": 1,
                        "steps": 5, "vocab": 49152, "impls": impls})
    if args.configs:
        keep = {x.strip() for x in args.configs.split(",")}
        configs = [c for c in configs if c["name"] in keep]
    peaks = {d: matmul_peak(d, args.threads) for d in ("fp32", "bf16")}
    if peaks["bf16"] < peaks["fp32"] and not args.force_bf16:
        # no native bf16 (e.g. AVX2 without AVX-512-BF16/AMX): a bf16 run measures an emulation, minutes a step
        skipped = [c["name"] for c in configs if c["bf16"]]
        configs = [c for c in configs if not c["bf16"]]
        if skipped:
            print(f"bf16 matmul is {peaks['fp32'] / peaks['bf16']:.0f}x slower than fp32 on this CPU: not running "
                  f"{', '.join(skipped)} (--force-bf16 runs them anyway)", flush=True)
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s", flush=True)
    rows = []
    for c in configs:
        setup = make_setup(work / ("real" if c["real"] else f"small_T{c['seq']}"), c["vocab"], c["seq"], batch,
                           c["steps"], c["real"], args.teacher if c["real"] else None)
        results: dict[str, list[dict[str, Any]]] = {i: [] for i in c["impls"]}
        for r in range(c["runs"]):
            order = c["impls"][r % len(c["impls"]):] + c["impls"][: r % len(c["impls"])]
            for impl in order:
                tag = f"{c['name'].replace(' ', '_').replace('=', '')}_{impl}_{r}"
                out = work / "runs" / tag
                spec = {"threads": args.threads, "seq": c["seq"], "batch": batch, "steps": c["steps"],
                        "bf16": c["bf16"], "vocab": c["vocab"], "ids": setup["ids"], "hf_teacher": setup["hf_teacher"],
                        "student": REAL_STUDENT if c["real"] else SMALL_STUDENT, "out": str(out)}
                if impl == "distillery":
                    import shutil

                    shutil.rmtree(out, ignore_errors=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    spec.update(distillery_config(setup, out, c["seq"], batch, c["steps"], c["bf16"], c["real"],
                                                  args.threads, extra))
                res = run_worker(impl, spec, work, timeout=3600)
                if res is not None:
                    res["tps"] = tokens_per_second(res["times"], batch, c["seq"])
                    results[impl].append(res)
                    print(f"{c['name']} run {r} {impl}: {res['tps']:,.0f} tok/s, peak RSS {res['rss_mib']:,.0f} MiB",
                          flush=True)
        flops = model_flops_per_token(REAL_TEACHER if c["real"] else SMALL_TEACHER,
                                      REAL_STUDENT if c["real"] else SMALL_STUDENT, c["vocab"], c["seq"])
        peak = peaks["bf16" if c["bf16"] else "fp32"]
        row = {"config": c, "flops_per_token": flops, "peak": peak, "real_teacher": setup["real_teacher"]}
        for impl, rs in results.items():
            if rs:
                tps = statistics.median(x["tps"] for x in rs)
                row[impl] = {"tps": tps, "all": [x["tps"] for x in rs],
                             "rss": statistics.median(x["rss_mib"] for x in rs), "mfu": tps * flops / peak,
                             "compile_seconds": rs[0].get("compile_seconds")}
        rows.append(row)
    write_report(rows, peaks, args)
    return 0


def write_report(rows: list[dict[str, Any]], peaks: dict[str, float], args: argparse.Namespace) -> None:
    def cell(row: dict[str, Any], impl: str) -> str:
        x = row.get(impl)
        return "not run" if x is None else f"{x['tps']:,.0f} ({x['mfu']:.1%}, {x['rss']:,.0f} MiB)"

    def ratio(row: dict[str, Any], other: str) -> str:
        d, o = row.get("distillery"), row.get(other)
        return "–" if d is None or o is None else f"{d['tps'] / o['tps']:.2f}x"

    cmd = " ".join(["benches/bench_kd_throughput.py", *sys.argv[1:]])
    lines = [
        "# KD training throughput: Distillery vs a plain torch loop vs TRL GKDTrainer",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {args.threads} threads, shared cores.",
        f"Command: `.venv/bin/python {cmd}`",
        f"Matmul peak (2048², same run): fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:,.0f} "
        "GFLOP/s.",
        "",
        "Cells: median tokens/s (MFU vs the same-dtype matmul peak, peak RSS of that process).",
        "",
        "| config | runs x steps | Distillery | plain loop | TRL GKD | vs plain | vs TRL |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        c = row["config"]
        name = c["name"] + (" (real SmolLM2 weights)" if row["real_teacher"] else
                            " (random weights)" if c["real"] else "")
        lines.append(f"| {name} | {c['runs']} x {c['steps']} | {cell(row, 'distillery')} | {cell(row, 'plain')} | "
                     f"{cell(row, 'trl')} | {ratio(row, 'plain')} | {ratio(row, 'trl')} |")
    lines += ["", "All runs (tokens/s):", ""]
    for row in rows:
        for impl in IMPLS:
            if row.get(impl):
                extra = row[impl].get("compile_seconds")
                lines.append(f"- {row['config']['name']} {impl}: {', '.join(f'{v:,.0f}' for v in row[impl]['all'])}"
                             + (f" (compile {extra:.1f} s)" if extra else ""))
    real = {r["config"]["bf16"]: r for r in rows if r["config"]["real"] and r.get("distillery")}
    if True in real and False in real:
        lines += ["", f"Real shape, Distillery bf16 / fp32: {real[True]['distillery']['tps'] / real[False]['distillery']['tps']:.2f}x"]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(rows, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
