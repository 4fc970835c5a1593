"""Compare two student artifacts on one data file: ``python -m training.compare A_DIR B_DIR --data FILE``.

For every example (``--max-examples`` caps them) both students are scored with teacher forcing on the
reference completion and decode the prompt greedily. Reported, as JSON and as a Markdown table:

* ``loss``: token cross-entropy on completion tokens (nats/token), token-weighted over the file;
* ``accuracy``: the task scorer's ``accuracy`` (``--task NAME``, else each example's ``task`` field when it
  names a bundled task, else exact match of the greedy output with the reference completion);
* ``greedy_identical``: share of examples whose greedy outputs are the same text;
* ``top1_agreement``: share of completion positions where both students' argmax tokens agree (null when
  their tokenizers differ: positions would not correspond);
* per-example diffs (outputs, correctness, losses) — the Markdown lists the examples whose outputs differ;
* with ``--judge DIR``: a pairwise judge's win-rate of A over B. Each differing pair is judged in both
  orders (A first, then B first) to cancel position bias; identical outputs count as ties without asking.

The judge is anything with ``compare(prompt, a, b)`` (:class:`PairwiseJudge`) returning a verdict with a
``winner`` of ``"a"``, ``"b"`` or ``"tie"`` (as :class:`arbiter.verdicts.CompareVerdict` does; a bare
string, a mapping, or a probability that the first answer is better are read too); a judge that also has
``compare_batch(prompts, a_list, b_list)`` is called once per order instead of once per pair.
``--judge DIR`` loads ``arbiter.judge.Judge.load(DIR)`` (a judge artifact, verified); with the Python API
pass any such object to :func:`compare_students`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from training.artifact import ArtifactError
from training.data import IGNORE_INDEX, QuarantineLog, collate, encode_example, read_examples
from training.kd.evaluation import generate_completions
from training.model import Student
from training.ops.structured_log import StructuredLogger, new_run_id
from training.tokenizer import DistilleryTokenizer


@runtime_checkable
class PairwiseJudge(Protocol):
    """Says which of two answers to a prompt is better."""

    def compare(self, prompt: str, a: str, b: str) -> Any: ...


class CompareError(RuntimeError):
    """The comparison cannot run (unloadable artifact, no examples, no judge)."""


def verdict_score(value: Any) -> float:
    """A judge's verdict as the first answer's score: 1.0 win, 0.5 tie, 0.0 loss.

    Raises:
        ValueError: for a verdict in none of the accepted shapes.
    """
    if isinstance(value, Mapping) and "winner" in value:
        return verdict_score(value["winner"])
    if hasattr(value, "winner"):
        return verdict_score(value.winner)
    if isinstance(value, str):
        word = value.strip().lower()
        scores = {"a": 1.0, "first": 1.0, "b": 0.0, "second": 0.0, "tie": 0.5, "draw": 0.5}
        if word in scores:
            return scores[word]
        raise ValueError(f"judge verdict {value!r} is not one of a/b/tie")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0:
        return 1.0 if value > 0.5 else 0.0 if value < 0.5 else 0.5
    raise ValueError(f"cannot read a judge verdict from {value!r}")


def load_judge(directory: Path) -> PairwiseJudge:
    """The judge artifact at ``directory``, through :meth:`arbiter.judge.Judge.load`.

    Raises:
        CompareError: when the directory is no judge artifact, or the loaded judge cannot compare.
    """
    from arbiter.judge import Judge  # on use: a comparison without --judge does not load the judge stack

    try:
        judge = Judge.load(directory)
    except (ArtifactError, OSError, ValueError) as exc:
        raise CompareError(f"cannot load the judge {directory}: {exc}") from exc
    if not isinstance(judge, PairwiseJudge):
        raise CompareError(f"the judge loaded from {directory} has no compare(prompt, a, b) method")
    return judge


@dataclass
class _Loaded:
    model: Student
    tokenizer: DistilleryTokenizer
    path: Path


def _judge_all(judge: PairwiseJudge, prompts: list[str], firsts: list[str],
               seconds: list[str]) -> list[float]:
    """The first answer's score for every pair: one ``compare_batch`` call when the judge has it."""
    if not prompts:
        return []
    batch = getattr(judge, "compare_batch", None)
    if callable(batch):
        verdicts = list(batch(prompts, firsts, seconds))
    else:
        verdicts = [judge.compare(p, a, b) for p, a, b in zip(prompts, firsts, seconds, strict=True)]
    return [verdict_score(v) for v in verdicts]


def _load(directory: Path) -> _Loaded:
    try:
        model = Student.from_pretrained(str(directory)).eval()
        tokenizer = DistilleryTokenizer.load(directory)
    except (ArtifactError, OSError, ValueError) as exc:
        raise CompareError(f"cannot load the student {directory}: {exc}") from exc
    return _Loaded(model, tokenizer, directory)


@torch.no_grad()
def teacher_forced(loaded: _Loaded, examples: list[Any], max_length: int, batch_size: int = 32,
                   ) -> list[tuple[float, int, list[int]]]:
    """Per example: (summed CE over completion tokens, number of those tokens, argmax id at each of them)."""
    out: list[tuple[float, int, list[int]]] = []
    for start in range(0, len(examples), batch_size):
        encoded = [encode_example(e, loaded.tokenizer, max_length, truncate=True)
                   for e in examples[start:start + batch_size]]
        batch = collate(encoded, loaded.tokenizer.pad_id)
        logits = loaded.model(batch["input_ids"], attention_mask=batch["attention_mask"]).float()
        labels = batch["labels"]
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        argmax = logits.argmax(-1)
        for row in range(labels.shape[0]):
            target = labels[row] != IGNORE_INDEX
            out.append((float(ce[row][target].sum()), int(target.sum()), argmax[row][target].tolist()))
    return out


def _scorer(task: str | None, example: Any) -> tuple[Any, str]:
    from training.tasks import TASKS, get_task

    name = task or (example.task if example.task in TASKS else None)
    if name is not None:
        return get_task(name).score, f"task:{name}"
    return (lambda ex, text: {"accuracy": float(text.strip() == ex["completion"].strip())}), "exact_match"


def compare_students(a_dir: Path, b_dir: Path, data: Path, *, task: str | None = None,
                     judge: PairwiseJudge | None = None, max_examples: int | None = None,
                     max_new_tokens: int = 64, max_length: int | None = None, quarantine: Path | None = None,
                     ) -> dict[str, Any]:
    """The comparison as a JSON-able dict (see the module docstring)."""
    if task is not None:
        from training.tasks import get_task

        get_task(task)  # an unknown name fails before any model is loaded
    if not Path(data).is_file():
        raise CompareError(f"{data} is not a file")
    a, b = _load(Path(a_dir)), _load(Path(b_dir))
    with tempfile.TemporaryDirectory() as tmp:
        log = QuarantineLog(quarantine or Path(tmp) / "quarantine.jsonl", max_bad_fraction=1.0)
        examples = []
        for _, example in read_examples(data, log):
            examples.append(example)
            if max_examples is not None and len(examples) >= max_examples:
                break
        bad = log.n_bad
    if not examples:
        raise CompareError(f"{data} holds no valid example")
    length = max_length or min(a.model.config.max_position_embeddings, b.model.config.max_position_embeddings)
    same_tokenizer = a.tokenizer.fingerprint() == b.tokenizer.fingerprint()
    forced = {"a": teacher_forced(a, examples, length), "b": teacher_forced(b, examples, length)}
    prompts = [e.prompt for e in examples]
    outputs = {"a": generate_completions(a.model, a.tokenizer, prompts, max_new_tokens),
               "b": generate_completions(b.model, b.tokenizer, prompts, max_new_tokens)}
    diffs, agree, positions, judged, consistent = [], 0, 0, [], 0
    sources = set()
    for i, example in enumerate(examples):
        score, source = _scorer(task, example)
        sources.add(source)
        record = example.model_dump()
        row: dict[str, Any] = {"id": example.id, "prompt": example.prompt, "reference": example.completion,
                               "identical": outputs["a"][i] == outputs["b"][i]}
        for side in ("a", "b"):
            loss_sum, n, _ = forced[side][i]
            row[side] = {"output": outputs[side][i], "metrics": score(record, outputs[side][i]),
                         "loss": loss_sum / n if n else None}
        if same_tokenizer:
            ids_a, ids_b = forced["a"][i][2], forced["b"][i][2]
            agree += sum(x == y for x, y in zip(ids_a, ids_b, strict=True))
            positions += len(ids_a)
        diffs.append(row)
    if judge is not None:
        pending = [i for i, row in enumerate(diffs) if not row["identical"]]
        prompts_d = [examples[i].prompt for i in pending]
        a_d, b_d = [outputs["a"][i] for i in pending], [outputs["b"][i] for i in pending]
        firsts = _judge_all(judge, prompts_d, a_d, b_d)
        seconds = [1.0 - s for s in _judge_all(judge, prompts_d, b_d, a_d)]
        for i, first, second in zip(pending, firsts, seconds, strict=True):
            consistent += int(first == second)
            diffs[i]["judge_score_a"] = (first + second) / 2
        for row in diffs:
            row.setdefault("judge_score_a", 0.5)  # identical outputs: a tie, without asking
            judged.append(row["judge_score_a"])

    def summary(side: str) -> dict[str, Any]:
        loss_sum = sum(f[0] for f in forced[side])
        tokens = sum(f[1] for f in forced[side])
        accuracy = sum(float(d[side]["metrics"].get("accuracy", 0.0)) for d in diffs) / len(diffs)
        return {"path": str(Path(a_dir if side == "a" else b_dir)),
                "loss": loss_sum / tokens if tokens else None, "accuracy": accuracy, "tokens": tokens}

    n_differ = sum(not d["identical"] for d in diffs)
    report: dict[str, Any] = {
        "data": str(data), "examples": len(examples), "bad_records": bad, "max_length": length,
        "accuracy_source": sorted(sources), "a": summary("a"), "b": summary("b"),
        "greedy_identical": 1.0 - n_differ / len(diffs),
        "top1_agreement": agree / positions if same_tokenizer and positions else None,
        "top1_agreement_reason": None if same_tokenizer else "the students' tokenizers differ",
        "judge": None, "diffs": diffs,
    }
    if judge is not None:
        win_rate = sum(judged) / len(judged)
        report["judge"] = {"win_rate_a": win_rate, "win_rate_b": 1 - win_rate,
                           "judged_pairs": n_differ, "ties_identical": len(diffs) - n_differ,
                           "order_consistency": consistent / n_differ if n_differ else None}
    return report


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", "\\n")


def to_markdown(report: dict[str, Any], max_diffs: int = 20) -> str:
    """A summary table (A vs B) and a table of the examples whose greedy outputs differ."""
    lines = [f"# Comparison on `{report['data']}` ({report['examples']} examples)", "",
             "| metric | A | B |", "|---|---|---|",
             f"| path | {_cell(report['a']['path'])} | {_cell(report['b']['path'])} |",
             f"| loss (nats/token) | {_cell(report['a']['loss'])} | {_cell(report['b']['loss'])} |",
             f"| accuracy ({', '.join(report['accuracy_source'])}) | {_cell(report['a']['accuracy'])} | "
             f"{_cell(report['b']['accuracy'])} |"]
    if report["judge"]:
        lines.append(f"| judge win-rate | {_cell(report['judge']['win_rate_a'])} | "
                     f"{_cell(report['judge']['win_rate_b'])} |")
    lines += ["", "| agreement | value |", "|---|---|",
              f"| greedy output identical | {_cell(report['greedy_identical'])} |",
              f"| top-1 token agreement | {_cell(report['top1_agreement'])} |"]
    differing = [d for d in report["diffs"] if not d["identical"]]
    shown = min(len(differing), max_diffs)
    lines += ["", f"## Differing outputs ({len(differing)}; first {shown} shown)", ""]
    if differing:
        lines += ["| id | prompt | reference | A | A acc | B | B acc |", "|---|---|---|---|---|---|---|"]
        for d in differing[:max_diffs]:
            lines.append(f"| {_cell(d['id'])} | {_cell(d['prompt'])} | {_cell(d['reference'])} | "
                         f"{_cell(d['a']['output'])} | {_cell(d['a']['metrics'].get('accuracy'))} | "
                         f"{_cell(d['b']['output'])} | {_cell(d['b']['metrics'].get('accuracy'))} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.compare",
        description="Compare two student artifacts on a data file: loss, accuracy, agreement, diffs and a "
                    "judge's win-rate.",
        epilog="Example: python -m training.compare runs/a/student runs/b/student --data val.jsonl "
               "--task arithmetic --out reports/a_vs_b",
    )
    parser.add_argument("a_dir", type=Path, help="student artifact A")
    parser.add_argument("b_dir", type=Path, help="student artifact B")
    parser.add_argument("--data", type=Path, required=True, help="JSONL or Parquet examples")
    parser.add_argument("--task", default=None, help="bundled task whose scorer gives accuracy")
    parser.add_argument("--judge", type=Path, default=None,
                        help="judge directory (loaded through arbiter.judge)")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=None,
                        help="token limit for teacher forcing (default: the smaller model's max positions)")
    parser.add_argument("--max-diffs", type=int, default=20, help="differing examples listed in the Markdown")
    parser.add_argument("--out", type=Path, default=None,
                        help="write comparison.json, comparison.md, the quarantine and the log here")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown", help="what stdout gets")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    log_file = args.out / "compare.jsonl" if args.out else None
    log = StructuredLogger("compare", new_run_id(), log_file, sys.stderr)
    log.info("comparison_started", a=args.a_dir, b=args.b_dir, data=args.data, task=args.task,
             judge=args.judge)
    try:
        judge = load_judge(args.judge) if args.judge is not None else None
        report = compare_students(args.a_dir, args.b_dir, args.data, task=args.task, judge=judge,
                                  max_examples=args.max_examples, max_new_tokens=args.max_new_tokens,
                                  max_length=args.max_length,
                                  quarantine=args.out / "quarantine.jsonl" if args.out else None)
    except (CompareError, KeyError, ValueError, OSError) as exc:
        log.error("comparison_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["run_id"] = log.run_id
    markdown = to_markdown(report, args.max_diffs)
    if args.out is not None:
        (args.out / "comparison.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (args.out / "comparison.md").write_text(markdown)
    log.info("comparison_done", examples=report["examples"], loss_a=report["a"]["loss"],
             loss_b=report["b"]["loss"], accuracy_a=report["a"]["accuracy"],
             accuracy_b=report["b"]["accuracy"],
             greedy_identical=report["greedy_identical"], top1_agreement=report["top1_agreement"],
             judge_win_rate_a=report["judge"]["win_rate_a"] if report["judge"] else None)
    print(json.dumps(report, indent=2, sort_keys=True) if args.format == "json" else markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
