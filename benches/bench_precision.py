"""bf16 autocast and int8 on this CPU: matmul peak, training-step throughput and MFU, int8 inference.

    .venv/bin/python benches/bench_precision.py [--threads 2] [--quick]

Everything is measured in one run and reported as ratios against the fp32 baseline of the same run;
MFU = achieved model FLOP/s divided by the measured matmul peak of the same dtype (2048x2048 matmul).
Writes benches/results/precision.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.model import Student  # noqa: E402
from training.model_config import ModelConfig  # noqa: E402


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of an n x n matmul in ``dtype``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = timed(lambda: a @ b, repeats)
    return 2 * n**3 / seconds


def bench_training(config: ModelConfig, batch: int, seq: int, bf16: bool, repeats: int) -> float:
    """Seconds per forward+backward+AdamW step."""
    torch.manual_seed(0)
    model = Student(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, config.vocab_size), ids.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats)


def bench_int8_inference(config: ModelConfig, batch: int, seq: int, repeats: int) -> tuple[float, float, float]:
    """(fp32 seconds, int8 dynamic-quantized seconds, max |logit diff|) for a forward pass."""
    torch.manual_seed(0)
    model = Student(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        fp32 = timed(lambda: model(ids), repeats)
        int8 = timed(lambda: quantized(ids), repeats)
        diff = float((model(ids) - quantized(ids)).abs().max())
    return fp32, int8, diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller model")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    peak32 = matmul_peak(torch.float32, 2048, repeats)
    peak16 = matmul_peak(torch.bfloat16, 2048, repeats)
    hidden = 256 if args.quick else 512
    config = ModelConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=512)
    batch, seq = 8, 256
    s32 = bench_training(config, batch, seq, False, repeats)
    s16 = bench_training(config, batch, seq, True, repeats)
    params = Student(config).num_parameters()
    flops = 6 * params * batch * seq
    i32, i8, diff = bench_int8_inference(config, batch, seq, repeats)
    date = dt.date.today().isoformat()
    lines = [
        "# bf16 autocast and int8 on CPU",
        "",
        f"Measured {date} on {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}.",
        f"Command: `.venv/bin/python benches/bench_precision.py --threads {args.threads}"
        f"{' --quick' if args.quick else ''}`",
        "",
        "| measurement | fp32 | bf16 | ratio bf16/fp32 |",
        "| --- | ---: | ---: | ---: |",
        f"| 2048² matmul (TFLOP/s) | {peak32 / 1e12:.3f} | {peak16 / 1e12:.3f} | {peak16 / peak32:.2f}x |",
        f"| train step, {params / 1e6:.1f}M params, B={batch}, T={seq} (ms) | {s32 * 1e3:.0f} | {s16 * 1e3:.0f} | "
        f"{s32 / s16:.2f}x faster |",
        f"| train tokens/s | {batch * seq / s32:,.0f} | {batch * seq / s16:,.0f} | {s32 / s16:.2f}x |",
        f"| MFU vs same-dtype matmul peak | {flops / s32 / peak32:.1%} | {flops / s16 / peak16:.1%} | |",
        "",
        "| inference forward (B=8, T=256) | fp32 | int8 dynamic (Linear) | speed-up |",
        "| --- | ---: | ---: | ---: |",
        f"| ms | {i32 * 1e3:.1f} | {i8 * 1e3:.1f} | {i32 / i8:.2f}x |",
        f"| max abs logit difference vs fp32 | | {diff:.3e} | |",
        "",
        "MFU counts 6 x parameters x tokens FLOPs per training step (attention FLOPs excluded), so it is a",
        "lower bound. int8 is `torch.ao.quantization.quantize_dynamic` on every `nn.Linear`.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
