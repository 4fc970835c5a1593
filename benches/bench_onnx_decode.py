"""Benchmark: per-token decode latency with a KV cache vs without (re-running the whole sequence each step),
in onnxruntime (CPUExecutionProvider) and, for reference, eager PyTorch.

A randomly initialised student (default hidden 256, 4 layers, 8 heads / 4 KV heads, vocab 2000, ~3.9M
parameters) is exported with :mod:`conversion.onnx_graph` (dynamo exporter, one graph for prefill and
decode) and checked once: the next-token logits of the cached path, the uncached path and PyTorch agree.
Two measurements, batch 1, one intra-op thread by default (``--threads``), the next-token ones the median
of ``--repeats`` timed runs after warm-up:

* at context length L (default 64, 128, 256): latency of producing the next token, i.e. one cached step
  with a past of L-1 tokens vs one full forward over L tokens;
* generation from a 64-token prompt up to 256 tokens: ms per generated token of the whole greedy loop
  (median of ``--gen-runs`` loops).

Usage::

    .venv/bin/python benches/bench_onnx_decode.py            # writes benches/results/onnx_decode.md
    .venv/bin/python benches/bench_onnx_decode.py --quick    # small smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from conversion.onnx_graph import export_graph
from conversion.onnx_session import OnnxCausalLM
from conversion.verify_common import StepFn, eager_step
from training.model import Student
from training.model_config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benches" / "results" / "onnx_decode.md"


@dataclass(frozen=True)
class BenchConfig:
    """Model shape and measurement plan (validated in :func:`parse_args`)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    lengths: tuple[int, ...]
    prompt: int
    total: int
    repeats: int
    gen_runs: int
    threads: int
    seed: int


def build_student(cfg: BenchConfig) -> Student:
    torch.manual_seed(cfg.seed)
    config = ModelConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=max(cfg.total, max(cfg.lengths)), tie_word_embeddings=False,
    )
    return Student(config).eval()


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def next_token_ms(step: StepFn, ids: np.ndarray, cached: bool, repeats: int) -> float:
    """Latency of the next token after the context ``ids`` (1, L): one cached step with a past of L-1
    tokens, or one full forward over all L tokens."""
    mask = np.ones_like(ids)
    if not cached:
        return median_ms(lambda: step(ids, mask, None), repeats)
    _, past = step(ids[:, :-1], mask[:, :-1], None)
    return median_ms(lambda: step(ids[:, -1:], mask, past), repeats)


def generate_ms_per_token(step: StepFn, prompt: np.ndarray, total: int, cached: bool,
                          runs: int) -> tuple[float, list[int]]:
    """Greedy generation from ``prompt`` (1, P) to ``total`` tokens: ms per generated token (prefill
    included, as a user waits for it; median over ``runs`` loops) and the generated ids."""
    results = [_generate_once(step, prompt, total, cached) for _ in range(runs)]
    return statistics.median(ms for ms, _ in results), results[0][1]


def _generate_once(step: StepFn, prompt: np.ndarray, total: int, cached: bool) -> tuple[float, list[int]]:
    tokens = prompt
    past: list[np.ndarray] | None = None
    step_input = prompt
    start = time.perf_counter()
    while tokens.shape[1] < total:
        mask = np.ones_like(tokens)
        if cached:
            logits, past = step(step_input, mask, past)
        else:
            logits, _ = step(tokens, mask, None)
        chosen = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens = np.concatenate([tokens, chosen], axis=1)
        step_input = chosen
    elapsed = time.perf_counter() - start
    generated = total - prompt.shape[1]
    return elapsed * 1000.0 / generated, tokens[0, prompt.shape[1]:].tolist()


def check_paths_agree(onnx_step: StepFn, torch_step: StepFn, ids: np.ndarray) -> float:
    """Max abs difference of next-token logits across ORT cached/uncached and PyTorch cached/uncached."""
    mask = np.ones_like(ids)
    results = []
    for step in (onnx_step, torch_step):
        full, _ = step(ids, mask, None)
        _, past = step(ids[:, :-1], mask[:, :-1], None)
        cached, _ = step(ids[:, -1:], mask, past)
        results += [full[:, -1], cached[:, -1]]
    return max(float(np.abs(r - results[0]).max()) for r in results[1:])


def command_line() -> str:
    """This invocation with the script path relative to the repository (as run from its root)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO).as_posix() if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join([shown, *sys.argv[1:]])


def run(cfg: BenchConfig) -> str:
    torch.set_num_threads(cfg.threads)
    student = build_student(cfg)
    params = student.num_parameters()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        export_graph(student, path)
        export_s = time.perf_counter() - start
        runner = OnnxCausalLM(path, threads=cfg.threads, spin=False)
        onnx_step, torch_step = runner.step, eager_step(student)
        rng = np.random.default_rng(cfg.seed)
        longest = rng.integers(3, cfg.vocab, (1, max(max(cfg.lengths), cfg.total))).astype(np.int64)
        agreement = check_paths_agree(onnx_step, torch_step, longest[:, :max(cfg.lengths)])
        rows = []
        for length in cfg.lengths:
            ids = longest[:, :length]
            rows.append((f"next token at context {length}",
                         next_token_ms(onnx_step, ids, True, cfg.repeats),
                         next_token_ms(onnx_step, ids, False, cfg.repeats),
                         next_token_ms(torch_step, ids, True, cfg.repeats),
                         next_token_ms(torch_step, ids, False, cfg.repeats)))
        prompt = longest[:, :cfg.prompt]
        gen = {}
        for name, step in (("onnx", onnx_step), ("torch", torch_step)):
            for cached in (True, False):
                gen[name, cached] = generate_ms_per_token(step, prompt, cfg.total, cached, cfg.gen_runs)
        same_tokens = len({tuple(tokens) for _, tokens in gen.values()}) == 1
        rows.append((f"generate {cfg.prompt} -> {cfg.total} tokens", gen["onnx", True][0],
                     gen["onnx", False][0], gen["torch", True][0], gen["torch", False][0]))

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x"

    lines = [
        "| measurement | ORT cached ms/token | ORT no-cache ms/token | ORT no-cache / cached | "
        "PyTorch cached ms/token | PyTorch no-cache ms/token | PyTorch no-cache / cached | "
        "PyTorch cached / ORT cached |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, oc, on, tc, tn in rows:
        lines.append(f"| {name} | {oc:.3f} | {on:.3f} | {ratio(on, oc)} | {tc:.3f} | {tn:.3f} "
                     f"| {ratio(tn, tc)} | {ratio(tc, oc)} |")
    table = "\n".join(lines)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gen_ratio = gen["onnx", False][0] / gen["onnx", True][0]
    faster = all(on > oc for _, oc, on, _, _ in rows)
    header = [
        "# ONNX decode latency: KV cache vs no cache (CPU)",
        "",
        f"Date: {dt.date.today().isoformat()}. Command: `$ .venv/bin/python {command_line()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (1-min load average {load:.1f} at the end), "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {cfg.threads} intra-op "
        f"thread{'' if cfg.threads == 1 else 's'} per runtime, float32, batch 1.",
        f"Student: hidden {cfg.hidden}, {cfg.layers} layers, {cfg.heads} heads / {cfg.kv_heads} KV heads, "
        f"intermediate {cfg.intermediate}, vocab {cfg.vocab}: {params / 1e6:.2f}M parameters, "
        "random weights. "
        f"ONNX export (dynamo exporter, one graph for prefill and decode) took {export_s:.1f} s.",
        "Cached = one step with past length L-1 (`present` fed back as `past_key_values`); no-cache = the "
        "whole sequence re-run from scratch each step. Next-token rows: median of "
        f"{cfg.repeats} runs after 2 warm-up runs. Generation row: median of {cfg.gen_runs} greedy loops, "
        "prefill included.",
        f"Correctness: next-token logits of ORT cached/uncached and PyTorch cached/uncached agree within "
        f"{agreement:.1e}; the four generation loops produced {'identical' if same_tokens else 'DIFFERENT'} "
        "tokens.",
        "",
        table,
        "",
        f"Acceptance (ORT decode with cache faster per token than without): "
        f"{'met' if faster else 'NOT met'}; generation {cfg.prompt} -> {cfg.total}: no-cache / cached = "
        f"{gen_ratio:.2f}x.",
    ]
    return "\n".join(header) + "\n"


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--lengths", default="64,128,256", help="comma-separated context lengths")
    parser.add_argument("--prompt", type=int, default=64, help="prompt length of the generation row")
    parser.add_argument("--total", type=int, default=256, help="sequence length the generation row reaches")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per next-token measurement")
    parser.add_argument("--gen-runs", type=int, default=3, help="generation loops per path (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for both runtimes (default 1: on a shared 2-core machine two "
                             "OpenMP threads stall at every op barrier while the other core is busy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    parser.add_argument("--quick", action="store_true", help="tiny model and lengths; print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.intermediate, args.vocab = 64, 2, 128, 500
        args.lengths, args.prompt, args.total, args.repeats, args.gen_runs = "16,32", 8, 24, 3, 1
    lengths = tuple(int(x) for x in args.lengths.split(","))
    counts_ok = min(args.repeats, args.gen_runs, args.threads) >= 1
    if min(lengths) < 2 or not counts_ok or not 0 < args.prompt < args.total:
        parser.error("need lengths >= 2, repeats, gen-runs and threads >= 1, and 0 < prompt < total")
    cfg = BenchConfig(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                      intermediate=args.intermediate, vocab=args.vocab, lengths=lengths, prompt=args.prompt,
                      total=args.total, repeats=args.repeats, gen_runs=args.gen_runs, threads=args.threads,
                      seed=args.seed)
    return cfg, None if args.quick else args.out


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    report = run(cfg)
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
