"""Latent-curriculum schedules at the `make reasoning` budget, one seed: the CoT run of configs/reasoning.yaml
(KD from the bundled teacher when present, the same schedule over train.steps) forked at FORK steps, then the
latent curriculum with configs/reasoning.yaml's `latent` section updated by OVERRIDES (JSON) for the rest of
the budget; held-out accuracy of the result (and optionally of the no-CoT and CoT students at train.steps).

    python benches/probe_latent_schedule.py FORK '{"steps_per_stage": 50, "final_stage_steps": 350}'
    python benches/probe_latent_schedule.py FORK '{}' --baselines no_cot,cot  # also these at train.steps
    python benches/probe_latent_schedule.py 0 '{}' --baselines cot --config other.yaml  # FORK 0: no latent run
    python benches/probe_latent_schedule.py 0 '{}' --time-steps 80     # CPU s/step of the CoT and no-CoT runs

Results are appended to OUT/results.jsonl; the CoT fork and the baselines are cached in OUT.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from training.kd.config import KDConfig
from training.kd.trainer import KDTrainer
from training.model import Student
from training.reasoning.latent_curriculum import LatentTrainer, evaluate_latent
from training.reasoning_pipeline import (
    build_teacher_caches,
    build_tokenizer,
    evaluate_text_student,
    kd_run_config,
    load_reasoning_config,
    prepare_data,
    resolve_teacher,
    train_kd_student,
)


def cot_fork(cfg: Any, out: Path, tokdir: str, teacher: str | None, paths: dict[str, str], fork: int,
             seed: int, stem: str) -> Student:
    """The CoT run (train.steps schedule) stopped after ``fork`` steps; cached."""
    cache = out / f"cot_fork{fork}_of{cfg.train.steps}_s{seed}_{stem}.pt"
    run = out / "runs" / f"cot_fork{fork}_s{seed}_{stem}"
    base = kd_run_config(cfg, run, tokdir, teacher, paths["cot_train"], paths["val"], cfg.train.steps, seed,
                         cache_root=out)
    if not cache.exists():
        trainer = KDTrainer(KDConfig.model_validate(base), stop_after_steps=fork)
        result = trainer.train()
        assert result.step == fork, result.step
        torch.save({"config": trainer.student.config, "state": trainer.student.state_dict()}, cache)
    saved = torch.load(cache, weights_only=False)
    model = Student(saved["config"])
    model.load_state_dict(saved["state"])
    return model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fork", type=int, help="CoT steps before the curriculum")
    parser.add_argument("overrides", help="JSON object updating configs/reasoning.yaml's latent section")
    parser.add_argument("--config", default="configs/reasoning.yaml")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--baselines", default="", help="comma-separated: no_cot, cot (at train.steps)")
    parser.add_argument("--out", type=Path, default=Path("runs/probe_schedule"))
    parser.add_argument("--tag", default="", help="label of this run in results.jsonl")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many CoT and no-CoT steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_reasoning_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher, _ = resolve_teacher(cfg.teacher)
    tok, tokdir = build_tokenizer(cfg, teacher, args.out)
    data = prepare_data(cfg, args.out)
    if teacher and cfg.kd.cache_top_k:  # the pipeline's top-k teacher cache, built once in OUT
        build_teacher_caches(cfg, teacher, data["paths"], args.out)
    paths, test, ev = data["paths"], data["test"], cfg.eval
    results = args.out / "results.jsonl"
    stem = Path(args.config).stem

    def record(entry: dict[str, Any]) -> None:
        entry = {"seed": args.seed, "steps": cfg.train.steps, "tag": args.tag, "config": args.config,
                 "student_shape": [cfg.student.hidden_size, cfg.student.num_hidden_layers], "lr": cfg.train.lr,
                 **entry}
        print(json.dumps(entry), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    chosen = [b for b in args.baselines.split(",") if b]
    runs = {"no_cot": ("no_cot_train", "no_cot_val", None), "cot": ("cot_train", "val", teacher)}
    if args.time_steps:  # process CPU time (all threads), less sensitive to other jobs than wall time
        for name, (train_file, val_file, t) in runs.items():
            base = kd_run_config(cfg, args.out / "runs" / f"time_{name}_{stem}", tokdir, t, paths[train_file],
                                 paths[val_file], cfg.train.steps, args.seed, cache_root=args.out)
            trainer = KDTrainer(KDConfig.model_validate(base), stop_after_steps=args.time_steps)
            cpu, wall = time.process_time(), time.time()
            trainer.train()
            record({"student": name, "timed_steps": args.time_steps,
                    "cpu_s_per_step": round((time.process_time() - cpu) / args.time_steps, 4),
                    "wall_s_per_step": round((time.time() - wall) / args.time_steps, 4)})
        return
    for name in chosen:
        train_file, val_file, t = runs[name]
        started = time.time()
        model, _ = train_kd_student(kd_run_config(cfg, args.out / "runs" / f"{name}_s{args.seed}_{stem}", tokdir,
                                                  t, paths[train_file], paths[val_file], cfg.train.steps, args.seed,
                                                  cache_root=args.out))
        e = evaluate_text_student(model, tok, test, ev.max_new_tokens, ev.batch_size)
        record({"student": name, "accuracy": e["accuracy"], "tokens": e["mean_generated_tokens"],
                "seconds": round(time.time() - started)})
    if args.fork == 0:
        return
    started = time.time()
    model = cot_fork(cfg, args.out, tokdir, teacher, paths, args.fork, args.seed, stem)
    fork_seconds = round(time.time() - started)
    lc = cfg.latent.model_validate({**cfg.latent.model_dump(), **json.loads(args.overrides), "seed": args.seed,
                                    "log_every": 100})
    curriculum = lc.total(len(data["train"]))
    started = time.time()
    result = LatentTrainer(lc, model, tok, data["train"], log=lambda m: print(m, flush=True)).train()
    e = evaluate_latent(result.student, tok, test, ev.max_new_tokens, ev.batch_size)
    record({"student": "latent", "fork": args.fork, "curriculum": curriculum, "total": args.fork + curriculum,
            "overrides": json.loads(args.overrides), "accuracy": e["accuracy"],
            "tokens": e["mean_generated_tokens"], "latents": e["mean_latent_positions"],
            "stage_ce": [round(h["ce"], 3) for h in result.stages], "fork_seconds": fork_seconds,
            "seconds": round(time.time() - started)})


if __name__ == "__main__":
    main()
