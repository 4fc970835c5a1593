"""Sequence packing vs length bucketing: padding share and training throughput on the bundled tasks.

    .venv/bin/python benches/bench_packing.py [--steps 20] [--threads 1]

Data: the three bundled tasks mixed (arithmetic, tool calls, 8-ball: examples of very different lengths),
encoded with the bundled teacher's tokenizer. Both streams see the same examples; bucketing batches 32
examples of similar length, packing fills rows of up to ``max_length`` tokens with whole examples
(attention kept within each example). Each step is one forward + backward of cross-entropy on the
``make distill`` student shape, so the comparison is the student's side of a KD step.
Reported: pad share (padding / all positions), target tokens per second and the ratio pack / bucket,
all measured in this run. Writes benches/results/packing.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import ExampleStream, StreamConfig  # noqa: E402
from training.data.toy_data import write_jsonl  # noqa: E402
from training.losses import cross_entropy  # noqa: E402
from training.model import Student  # noqa: E402
from training.model_config import ModelConfig  # noqa: E402
from training.tasks import get_task  # noqa: E402
from training.tokenizer import DistilleryTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results" / "packing.md"


def measure(stream: ExampleStream, model: Student, steps: int, packed: bool) -> dict[str, float]:
    """Pad share and target tokens/s over ``steps`` forward + backward steps (2 warm-up steps first)."""
    batches = iter(stream)
    positions = pads = tokens = 0
    elapsed = 0.0
    for step in range(steps + 2):
        batch = next(batches)
        start = time.perf_counter()
        out = model.run(batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], sequence_ids=batch["sequence_ids"] if packed else None)
        assert out.logits is not None
        n = int(batch["num_target_tokens"])
        cross_entropy(out.logits, batch["labels"], normalizer=float(n)).backward()
        model.zero_grad(set_to_none=True)
        if step >= 2:
            elapsed += time.perf_counter() - start
            positions += batch["input_ids"].numel()
            pads += int((batch["attention_mask"] == 0).sum())
            tokens += n
    return {"pad_share": pads / positions, "tokens_per_s": tokens / elapsed, "rows": batch["input_ids"].shape[0],
            "width": batch["input_ids"].shape[1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = DistilleryTokenizer.load(ROOT / "assets" / "teacher")
    examples = [ex for name in ("arithmetic", "toolcall", "eightball") for ex in get_task(name).generate(600, 0)]
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=96, intermediate_size=256,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=args.max_length)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mixed.jsonl"
        write_jsonl(data, examples)
        lengths = [len(tokenizer.encode(e["prompt"] + e["completion"])) for e in examples]
        mean_length = sum(lengths) / len(lengths)
        # about the same number of real tokens a batch: 32 examples, or the rows they fill when packed
        rows = max(1, round(32 * mean_length / args.max_length))
        for name, batching, batch_size in (("bucket", "bucket", 32), ("pack", "pack", rows)):
            stream = ExampleStream([data], tokenizer, StreamConfig(
                max_length=args.max_length, batch_size=batch_size, batching=batching, truncate=True,
                shuffle_buffer=2048, seed=0, drop_last=True))
            torch.manual_seed(0)
            results[name] = measure(stream, Student(config).train(), args.steps, batching == "pack")
    ratio = results["pack"]["tokens_per_s"] / results["bucket"]["tokens_per_s"]
    lines = [
        f"## {dt.date.today()}: {len(examples)} mixed examples (mean {mean_length:.1f} tokens, "
        f"min {min(lengths)}, max {max(lengths)}), {args.threads} thread(s), {args.steps} steps each",
        "",
        f"Command: `.venv/bin/python benches/bench_packing.py --steps {args.steps} --threads {args.threads} "
        f"--max-length {args.max_length}`",
        "",
        "| batching | batch | pad share | target tokens/s | vs bucket |",
        "| --- | --- | ---: | ---: | ---: |",
        f"| bucket | 32 examples, width {results['bucket']['width']} (last batch) | "
        f"{results['bucket']['pad_share']:.1%} | {results['bucket']['tokens_per_s']:,.0f} | 1.00x |",
        f"| pack | {rows} rows of <= {args.max_length} tokens | {results['pack']['pad_share']:.1%} | "
        f"{results['pack']['tokens_per_s']:,.0f} | {ratio:.2f}x |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
