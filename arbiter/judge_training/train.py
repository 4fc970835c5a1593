"""Train a judge: ``python -m arbiter.judge_training.train --config configs/judge.yaml [--out DIR]``.

Writes ``DIR/judge/`` (a judge artifact: backbone + heads + tokenizer + ``judge_config.json``, manifest
verified), ``DIR/report.json`` (test metrics on held-out pairs: ``pairwise_accuracy``, ``clause_f1``,
``step_auroc``, plus params and wall_seconds) and ``DIR/log.jsonl`` (one line per evaluation). The kept
checkpoint is the one with the best validation value (``eval.selection``); the test split is used once,
at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from arbiter.data.generate import build_splits
from arbiter.data.schema import PairDataError, PreferencePair, read_pairs, write_pairs
from arbiter.judge_training.artifact import save_judge
from arbiter.judge_training.batches import (
    IGNORE_INDEX,
    EncodedPair,
    collate,
    encode_pairs,
    lm_batch,
    lm_inputs,
)
from arbiter.judge_training.config import ConfigFileError, JudgeTrainConfig, load_config
from arbiter.judge_training.encoding import EncodedInput
from arbiter.judge_training.evaluate import batch_loss, evaluate, selection_value
from arbiter.judge_training.model import JudgeModel
from training.artifact import ArtifactError
from training.kd.optim import warmup_cosine
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

SPLITS = ("train", "val", "test")
REPORT_FILE = "report.json"
JUDGE_SUBDIR = "judge"


def load_splits(cfg: JudgeTrainConfig) -> dict[str, list[PreferencePair]]:
    """Pairs from ``data.dir`` (validated JSONL) or freshly generated arithmetic pairs."""
    if cfg.data.dir is not None:
        return {name: read_pairs(cfg.data.dir / f"{name}.jsonl") for name in SPLITS}
    return build_splits(cfg.data.train, cfg.data.val, cfg.data.test, cfg.seed, cfg.data.mix)


def build_tokenizer(cfg: JudgeTrainConfig, train: Sequence[PreferencePair]) -> DistilleryTokenizer:
    """init_from's tokenizer, the configured one, or BPE trained on the training pairs' texts."""
    if cfg.init_from is not None:
        return DistilleryTokenizer.load(cfg.init_from)
    if cfg.tokenizer is not None:
        return DistilleryTokenizer.load(cfg.tokenizer)
    texts = [pair.prompt + response for pair in train for response in (pair.a, pair.b)]
    return DistilleryTokenizer.train(texts, vocab_size=cfg.vocab_size)


def build_model(cfg: JudgeTrainConfig, tokenizer: DistilleryTokenizer) -> JudgeModel:
    """A judge on init_from's backbone or on a fresh one sized by ``cfg.backbone``."""
    if cfg.init_from is not None:
        backbone = Student.from_pretrained(str(cfg.init_from))
        if tokenizer.vocab_size > backbone.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but {cfg.init_from} embeds only "
                             f"{backbone.config.vocab_size}")
    else:
        config = ModelConfig(vocab_size=tokenizer.vocab_size, **cfg.backbone_shape().model_dump(),
                             bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                             pad_token_id=tokenizer.pad_id)
        backbone = Student(config)
    if cfg.data.max_length > backbone.config.max_position_embeddings:
        raise ValueError(f"data.max_length={cfg.data.max_length} exceeds the backbone's "
                         f"max_position_embeddings={backbone.config.max_position_embeddings}")
    return JudgeModel(backbone, cfg.heads.clauses, cfg.heads.step_head, cfg.heads.surprise_features).train()


def build_optimizer(model: JudgeModel, cfg: JudgeTrainConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW (``lr`` defaults to ``optim.lr``); weight decay on weight matrices only (not embeddings, norms,
    biases or the tie parameter)."""
    decay, no_decay = [], []
    for name, param in {id(p): (n, p) for n, p in model.named_parameters()}.values():
        (decay if param.ndim == 2 and "embed_tokens" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr if lr is None else lr, betas=cfg.optim.betas)


def batch_order(num_pairs: int, batch_pairs: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of pair indices: each epoch a fresh shuffle, the last partial batch dropped unless
    there are fewer pairs than one batch."""
    rng = random.Random(f"judge-batches:{seed}")
    size = min(batch_pairs, num_pairs)
    while True:
        order = list(range(num_pairs))
        rng.shuffle(order)
        for start in range(0, num_pairs - size + 1, size):
            yield order[start:start + size]


class JsonlLog:
    """Appends one JSON object a line to ``path`` and echoes a short line to stdout."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        path.write_text("")

    def write(self, event: str, **values: Any) -> None:
        values["cpu_seconds"] = round(time.process_time(), 1)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, **values}, sort_keys=True) + "\n")
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
                         if not isinstance(v, dict))
        print(f"[judge] {event} {shown}", flush=True)


def train_judge(cfg: JudgeTrainConfig) -> dict[str, Any]:
    """Run one training; writes the artifact, the report and the log under ``cfg.out_dir``; returns the
    report."""
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    log = JsonlLog(out / "log.jsonl")
    splits = load_splits(cfg)
    if cfg.data.dir is None:
        for name, pairs in splits.items():
            write_pairs(out / "data" / f"{name}.jsonl", pairs)
    tokenizer = build_tokenizer(cfg, splits["train"])
    model = build_model(cfg, tokenizer)
    encoded = {name: encode_pairs(pairs, tokenizer, cfg.heads.clauses, cfg.data.max_length)
               for name, pairs in splits.items()}
    log.write("start", params=model.num_parameters(), **{f"{k}_pairs": len(v) for k, v in encoded.items()},
              setup_seconds=round(time.perf_counter() - started, 2))
    if cfg.pretrain.steps:
        _pretrain(model, cfg, lm_inputs(encoded["train"]), tokenizer.pad_id, log)
    optimizer = build_optimizer(model, cfg)
    best = _fit(model, optimizer, cfg, encoded["train"], encoded["val"], tokenizer.pad_id, log)
    model.load_state_dict(best["state"])
    train_seconds = time.perf_counter() - started
    test = evaluate(model, encoded["test"], batch_pairs=cfg.eval.batch_pairs, pad_id=tokenizer.pad_id,
                    padding_side=cfg.padding_side)
    log.write("test", **test)
    report: dict[str, Any] = {
        "pairwise_accuracy": test["pairwise_accuracy"],
        "clause_f1": test["clause_f1"],
        "step_auroc": test["step_auroc"],
        "three_way_accuracy": test["three_way_accuracy"],
        "clause_f1_per_clause": test["clause_f1_per_clause"],
        "test_set": "held-out prompts (training.data.toy_data.is_heldout)" if cfg.data.dir is None
        else str(cfg.data.dir / "test.jsonl"),
        "counts": {name: len(pairs) for name, pairs in encoded.items()},
        "test_counts": {k: test[k] for k in ("num_pairs", "num_non_tie_pairs", "num_steps")},
        "tie_model": "davidson",
        "tie_nu": test["tie_nu"],
        "best_step": best["step"],
        "best_val": best["metrics"],
        "steps": cfg.optim.max_steps,
        "pretrain_steps": cfg.pretrain.steps,
        "params": model.num_parameters(),
        "backbone_params": model.backbone.num_parameters(),
        "threads": cfg.num_threads,
        "train_seconds": round(train_seconds, 2),
        "config": cfg.model_dump(mode="json"),
    }
    card = {"data": report["test_set"], "teacher": "none (judge trained on verifier-labelled pairs)",
            "losses": "LM warm-up on good responses, then Davidson pairwise + clause BCE + step BCE + LM",
            "limits": "scores only arithmetic-style responses like those it was trained on"}
    metrics = {k: report[k] for k in ("pairwise_accuracy", "clause_f1", "step_auroc", "three_way_accuracy")}
    save_judge(model, out / JUDGE_SUBDIR, tokenizer=tokenizer, max_length=cfg.data.max_length,
               metrics={k: v for k, v in metrics.items() if v is not None}, card=card)
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    report["cpu_seconds"] = round(time.process_time() - cpu_started, 2)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _pretrain(model: JudgeModel, cfg: JudgeTrainConfig, texts: list[EncodedInput], pad_id: int, log: JsonlLog
              ) -> None:
    """LM warm-up of the backbone (next-token loss on ``texts``' responses), its own AdamW and schedule."""
    if not texts:
        raise ValueError("pretrain.steps > 0 needs good training responses (winners or ties without negative labels)")
    pre = cfg.pretrain
    optimizer = build_optimizer(model, cfg, lr=pre.lr)
    batches = batch_order(len(texts), pre.batch_size, cfg.seed + 1)
    running, count = 0.0, 0
    for step in range(1, pre.steps + 1):
        scale = warmup_cosine(step - 1, warmup_steps=pre.warmup_steps, max_steps=pre.steps,
                              min_ratio=pre.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = pre.lr * scale
        ids, mask, labels = lm_batch([texts[i] for i in next(batches)], pad_id, cfg.padding_side)
        hidden = model.backbone.run(ids, attention_mask=mask, compute_logits=False).last_hidden_state
        target = labels != IGNORE_INDEX
        loss = F.cross_entropy(model.backbone.lm_head(hidden[target]), labels[target])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        running, count = running + loss.item(), count + 1
        if step % cfg.eval.every == 0 or step == pre.steps:
            log.write("pretrain", step=step, lr=pre.lr * scale, loss_lm=running / count)
            running, count = 0.0, 0


def _fit(model: JudgeModel, optimizer: torch.optim.Optimizer, cfg: JudgeTrainConfig, train: list[EncodedPair],
         val: list[EncodedPair], pad_id: int, log: JsonlLog) -> dict[str, Any]:
    """The optimisation loop; returns the best validation state ``{"state", "step", "metrics"}``."""
    opt = cfg.optim
    best: dict[str, Any] = {"value": float("-inf"), "state": copy.deepcopy(model.state_dict()), "step": 0,
                            "metrics": {}}
    batches = batch_order(len(train), opt.batch_pairs, cfg.seed)
    running: dict[str, float] = {}
    for step in range(1, opt.max_steps + 1):
        scale = warmup_cosine(step - 1, warmup_steps=opt.warmup_steps, max_steps=opt.max_steps,
                              min_ratio=opt.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = opt.lr * scale
        batch = collate([train[i] for i in next(batches)], pad_id, cfg.padding_side, len(model.clauses))
        loss, terms = batch_loss(model, batch, cfg.loss.clause_weight, cfg.loss.step_weight, cfg.loss.lm_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite judge loss at step {step}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        for key, value in terms.items():
            running[key] = running.get(key, 0.0) + value
        if step % cfg.eval.every == 0 or step == opt.max_steps:
            count = cfg.eval.every if step % cfg.eval.every == 0 else step % cfg.eval.every
            metrics = evaluate(model, val, batch_pairs=cfg.eval.batch_pairs, pad_id=pad_id,
                               padding_side=cfg.padding_side)
            value = selection_value(metrics, cfg.eval.selection)
            log.write("eval", step=step, lr=opt.lr * scale, **{f"loss_{k}": v / count for k, v in running.items()},
                      **metrics)
            running = {}
            if value > best["value"]:
                best = {"value": value, "state": copy.deepcopy(model.state_dict()), "step": step,
                        "metrics": metrics}
    return best


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m arbiter.judge_training.train",
        description="Train a judge (Distillery backbone + score/clause/step heads) on pairwise preferences "
                    "with the Davidson tie model, keep the best validation checkpoint, and write OUT/judge "
                    "(artifact), OUT/report.json (held-out test metrics) and OUT/log.jsonl.",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML config (e.g. configs/judge.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (overrides out_dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; exit status 0 on success, 2 for a bad config or bad data."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, out_dir=args.out)
        report = train_judge(cfg)
    except (ConfigFileError, PairDataError, ArtifactError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: report[k] for k in ("pairwise_accuracy", "clause_f1", "step_auroc", "params", "wall_seconds")}
    print(json.dumps(summary))
    print(f"judge artifact: {Path(cfg.out_dir) / JUDGE_SUBDIR}; report: {Path(cfg.out_dir) / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
