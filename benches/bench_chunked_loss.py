"""Benchmark: plain vs chunked KD + CE loss (forward + backward including the lm_head matmuls) on CPU.

For every token count ``N = B * T`` and each path, a fresh subprocess allocates the inputs, warms the
kernels up on a tiny problem, records its resident set size (RSS) as the baseline, runs the loss forward +
backward ``--iters`` times (after one untimed warm-up at full size) and reports
``peak = ru_maxrss - baseline`` (``resource.getrusage(RUSAGE_SELF)``, the kernel's high-water mark of the
process) together with the median step time. Gradients w.r.t. the student hidden states and lm_head weight
are written to a temporary directory and compared across the two paths.

Usage::

    .venv/bin/python benches/bench_chunked_loss.py            # full run, writes benches/results/chunked_loss.md
    .venv/bin/python benches/bench_chunked_loss.py --quick    # small smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.losses import cross_entropy, forward_kl
from training.losses.chunked import chunked_kd_ce_loss

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benches" / "results" / "chunked_loss.md"
BYTES_PER_KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration (validated in :func:`parse_args`)."""

    path: str
    tokens: int
    vocab: int
    hidden: int
    teacher_hidden: int
    chunk_size: int
    iters: int
    threads: int
    temperature: float
    kd_weight: float
    ce_weight: float
    seed: int


@dataclass(frozen=True)
class Measurement:
    """One worker run: median wall and CPU (user + system, all threads) seconds per step, tokens/s (wall) and
    peak memory above the baseline (MiB)."""

    path: str
    tokens: int
    step_s: float
    cpu_s: float
    tokens_per_s: float
    peak_mib: float
    baseline_mib: float
    peak_raised: (
        bool  # False: the loss never exceeded the earlier high-water mark; peak_mib is an upper bound
    )
    loss: float


def _rss_bytes() -> int:
    """Current resident set size of this process in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    """High-water mark of this process's RSS in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * BYTES_PER_KIB


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _inputs(cfg: BenchConfig, tokens: int, vocab: int) -> dict[str, torch.Tensor]:
    """Seeded float32 inputs: hidden (N,H), lm_head (V,H), teacher hidden (N,Ht), teacher lm_head (V,Ht)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    labels[torch.rand(tokens, generator=gen) < 0.1] = -100
    return {
        "hidden": torch.randn(tokens, cfg.hidden, generator=gen).requires_grad_(True),
        "weight": (torch.randn(vocab, cfg.hidden, generator=gen) * cfg.hidden**-0.5).requires_grad_(True),
        "t_hidden": torch.randn(tokens, cfg.teacher_hidden, generator=gen),
        "t_weight": torch.randn(vocab, cfg.teacher_hidden, generator=gen) * cfg.teacher_hidden**-0.5,
        "labels": labels,
        "kd_mask": labels != -100,
    }


def _step(cfg: BenchConfig, x: dict[str, torch.Tensor]) -> float:
    """One forward + backward of the configured path; returns the loss value."""
    x["hidden"].grad = None
    x["weight"].grad = None
    if cfg.path == "plain":
        logits = x["hidden"] @ x["weight"].T
        with torch.no_grad():
            t_logits = x["t_hidden"] @ x["t_weight"].T
        loss = cfg.kd_weight * forward_kl(
            logits, t_logits, mask=x["kd_mask"], temperature=cfg.temperature
        ) + cfg.ce_weight * cross_entropy(logits, x["labels"])
        del logits, t_logits
    else:
        loss = chunked_kd_ce_loss(
            x["hidden"], x["weight"], x["t_hidden"], x["t_weight"], x["labels"], x["kd_mask"],
            cfg.temperature, cfg.kd_weight, cfg.ce_weight, None, cfg.chunk_size,
        )  # fmt: skip
    loss.backward()
    return float(loss.detach())


def run_worker(cfg: BenchConfig, grad_file: Path | None) -> Measurement:
    """Measure one configuration in this (fresh) process."""
    torch.set_num_threads(cfg.threads)
    warm = _inputs(cfg, 64, 512)
    _step(cfg, warm)
    del warm
    x = _inputs(cfg, cfg.tokens, cfg.vocab)
    baseline = _rss_bytes()
    maxrss_before = _maxrss_bytes()
    loss = _step(cfg, x)  # full-size warm-up, also part of the peak
    times, cpu_times = [], []
    for _ in range(cfg.iters):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        loss = _step(cfg, x)
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu_seconds() - cpu_start)
    maxrss_after = _maxrss_bytes()
    if grad_file is not None:
        assert x["hidden"].grad is not None and x["weight"].grad is not None
        torch.save({"hidden": x["hidden"].grad, "weight": x["weight"].grad, "loss": loss}, grad_file)
    step_s = statistics.median(times)
    return Measurement(
        path=cfg.path,
        tokens=cfg.tokens,
        step_s=step_s,
        cpu_s=statistics.median(cpu_times),
        tokens_per_s=cfg.tokens / step_s,
        peak_mib=(max(maxrss_after, maxrss_before) - baseline) / MIB,
        baseline_mib=baseline / MIB,
        peak_raised=maxrss_after > maxrss_before,
        loss=loss,
    )


def _spawn(cfg: BenchConfig, grad_file: Path) -> Measurement:
    """Run one configuration in a fresh subprocess and parse its JSON result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        json.dumps(asdict(cfg)),
        "--grad-file",
        str(grad_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {cfg.path} N={cfg.tokens} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return Measurement(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _mem_available_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * BYTES_PER_KIB
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def _grad_diff(a_file: Path, b_file: Path) -> float:
    """Max over hidden / weight gradients of ``max|a - b| / max|a|``."""
    a, b = torch.load(a_file), torch.load(b_file)
    return max(
        float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)) for k in ("hidden", "weight")
    )


def _fmt_peak(m: Measurement) -> str:
    """Peak MiB for the table; ``<=`` marks an upper bound (the run stayed below an earlier high-water mark)."""
    return f"{m.peak_mib:,.0f}" if m.peak_raised else f"<= {m.peak_mib:,.0f}"


def _fmt_ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.3f}" if num is not None and den is not None else "n/a"


def run_suite(args: argparse.Namespace) -> str:
    """Run every configuration and return the Markdown report."""
    rows: list[str] = []
    notes: list[str] = []
    plain_bytes_per_token: float | None = None
    load_before = os.getloadavg()
    acceptance: str | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for tokens in args.sizes:
            results: dict[str, Measurement | None] = {"plain": None, "chunked": None}
            files = {path: Path(tmp) / f"{path}-{tokens}.pt" for path in results}
            for path in ("plain", "chunked"):
                cfg = BenchConfig(
                    path=path, tokens=tokens, vocab=args.vocab, hidden=args.hidden,
                    teacher_hidden=args.teacher_hidden, chunk_size=args.chunk_size, iters=args.iters,
                    threads=args.threads, temperature=2.0, kd_weight=1.0, ce_weight=0.5, seed=0,
                )  # fmt: skip
                if path == "plain":
                    # (N, V) float32 tensors dominate; before the first measurement assume 12 of them live.
                    per_token = plain_bytes_per_token or 12 * args.vocab * 4
                    estimate = per_token * tokens
                    limit = min(args.max_plain_gb * 1e9, 0.8 * _mem_available_bytes())
                    if estimate > limit:
                        notes.append(
                            f"plain path skipped at B*T={tokens}: estimated peak {estimate / 1e9:.1f} GB "
                            f"(extrapolated from the largest measured size) exceeds the {limit / 1e9:.1f} GB limit"
                        )
                        continue
                m = _spawn(cfg, files[path])
                results[path] = m
                if path == "plain":
                    plain_bytes_per_token = m.peak_mib * MIB / tokens
                if not m.peak_raised:
                    notes.append(
                        f"{path} B*T={tokens}: the loss stayed below the process's earlier high-water mark, so its "
                        "peak is an upper bound"
                    )
                print(
                    f"  {path:8s} B*T={tokens:6d}: {m.tokens_per_s:9.0f} tok/s, step {m.step_s:7.3f} s "
                    f"(CPU {m.cpu_s:7.3f} s), "
                    f"peak +{m.peak_mib:8.1f} MiB (baseline {m.baseline_mib:.0f} MiB), loss {m.loss:.6f}",
                    flush=True,
                )
            plain, chunked = results["plain"], results["chunked"]
            assert chunked is not None
            grad_diff = f"{_grad_diff(files['plain'], files['chunked']):.1e}" if plain is not None else "n/a"
            loss_diff = f"{abs(plain.loss - chunked.loss):.1e}" if plain is not None else "n/a"
            plain_tps = f"{plain.tokens_per_s:,.0f}" if plain is not None else "skipped"
            plain_cpu = f"{plain.cpu_s:.2f}" if plain is not None else "skipped"
            cpu_speedup = _fmt_ratio(plain.cpu_s if plain else None, chunked.cpu_s)
            plain_mem = _fmt_peak(plain) if plain is not None else "skipped"
            tps_ratio = _fmt_ratio(chunked.tokens_per_s, plain.tokens_per_s if plain else None)
            mem_ratio = _fmt_ratio(chunked.peak_mib, plain.peak_mib if plain else None)
            rows.append(
                f"| {tokens} | {plain_tps} | {chunked.tokens_per_s:,.0f} | {tps_ratio} | {plain_cpu} | "
                f"{chunked.cpu_s:.2f} | {cpu_speedup} | {plain_mem} | {_fmt_peak(chunked)} | {mem_ratio} | "
                f"{loss_diff} | {grad_diff} |"
            )
            if tokens == 8192 and args.vocab == 32000 and plain is not None:
                ratio = chunked.peak_mib / plain.peak_mib
                verdict = "met" if ratio <= 0.25 else "NOT met"
                acceptance = (
                    f"Acceptance (B*T=8192, V=32000: chunked peak <= 1/4 of plain, same gradients): "
                    f"memory ratio {ratio:.3f}, max relative gradient difference {grad_diff} -> {verdict}."
                )

    load_after = os.getloadavg()
    command = "$ .venv/bin/python benches/bench_chunked_loss.py" + (" --quick" if args.quick else "")
    if args.extra_cmd:
        command += " " + args.extra_cmd
    lines = [
        "# Chunked vs plain KD + CE loss (CPU)",
        "",
        f"Date: {dt.date.today().isoformat()}. Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} threads, float32.",
        f"Loss: 1.0 * forward KL (T=2, teacher logits from teacher hidden states) + 0.5 * CE, ~10% ignored "
        f"labels; V={args.vocab}, student hidden {args.hidden}, teacher hidden {args.teacher_hidden}, "
        f"chunk {args.chunk_size}. Each step is forward + backward including the lm_head matmuls "
        f"(student and teacher); median of {args.iters} timed steps after one warm-up.",
        "Peak memory: `ru_maxrss` (RSS high-water mark) of a fresh subprocess per configuration minus its RSS "
        "after the inputs were allocated; it includes the gradients of hidden and lm_head.",
        "",
        "Throughput is wall-clock tokens/s; because the machine may be shared, the CPU seconds (user + system, "
        "all threads) per step are reported too, and their ratio plain/chunked is the speed-up measured in CPU "
        f"time. 1-minute load average: {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end of the run "
        f"(on {os.cpu_count()} CPUs).",
        "",
        "| B*T | plain tok/s | chunked tok/s | tok/s ratio (chunked/plain) | plain CPU s/step | chunked CPU s/step "
        "| CPU-time speed-up (plain/chunked) | plain peak MiB | chunked peak MiB | memory ratio (chunked/plain) "
        "| abs loss diff | max rel grad diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if acceptance:
        lines += [acceptance, ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run (V=8000, N=512,1024), prints only"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="B*T values")
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--teacher-hidden", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-plain-gb", type=float, default=16.0, help="skip the plain path above this")
    parser.add_argument("--out", type=Path, default=None, help="Markdown output (default: results file)")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--grad-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        args.sizes = args.sizes or ([512, 1024] if args.quick else [1024, 4096, 8192, 16384])
        args.vocab = args.vocab or (8000 if args.quick else 32000)
        args.iters = args.iters or (1 if args.quick else 3)
        extra = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
        args.extra_cmd = " ".join(extra)
        if args.out is None and not args.quick:
            args.out = DEFAULT_OUT
        for name in ("hidden", "teacher_hidden", "chunk_size", "iters", "threads", "vocab"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
        if any(n < 1 for n in args.sizes):
            parser.error("--sizes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: a worker measures one configuration; otherwise run the suite and write the report."""
    args = parse_args(argv)
    if args.worker is not None:
        cfg = BenchConfig(**json.loads(args.worker))
        print(json.dumps(asdict(run_worker(cfg, args.grad_file))))
        return
    report = run_suite(args)
    print()
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
