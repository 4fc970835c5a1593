"""Latent-curriculum diagnosis: a CoT student (CE, no teacher), then the curriculum one stage at a time with
held-out accuracy after each stage, and the norms of token embeddings vs fed-back hidden states.

    python benches/probe_latent_stages.py COT_STEPS VARIANT [OUT]     # VARIANT: base, c2, lr3e-4, detach
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from training.model import Student
from training.reasoning.latent_curriculum import LatentCurriculumConfig, LatentTrainer, evaluate_latent
from training.reasoning.latent_model import LatentStudent
from training.reasoning_pipeline import (
    ReasoningConfig,
    build_tokenizer,
    evaluate_text_student,
    kd_run_config,
    prepare_data,
    train_kd_student,
)

BASE = {"latents_per_step": 1, "max_stage": 3, "first_stage": 1, "steps_per_stage": 500, "mix_prob": 0.1,
        "reset_optimizer": True, "batch_size": 32, "lr": 1e-3, "warmup_steps": 10, "min_lr_ratio": 1.0,
        "feedback": "post_norm", "log_every": 10000}
VARIANTS = {"base": {}, "c2": {"latents_per_step": 2}, "lr3e-4": {"lr": 3e-4}, "detach": {"detach_feedback": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cot_steps", type=int, help="optimizer steps of the CoT student before the curriculum")
    parser.add_argument("variant", choices=sorted(VARIANTS), help="curriculum variant")
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/probe_latent"), help="output directory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cot_steps, variant, out = args.cot_steps, args.variant, args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = ReasoningConfig.model_validate({"teacher": None, "data": {"train": 10000, "test": 200}})
    tok, tokdir = build_tokenizer(cfg, None, out)
    data = prepare_data(cfg, out)
    test = data["test"]
    cotdir = out / f"cot{cot_steps}"
    started = time.time()
    if not (cotdir / "done").exists():
        shutil.rmtree(cotdir, ignore_errors=True)
        _, info = train_kd_student(kd_run_config(cfg, cotdir, tokdir, None, data["paths"]["cot_train"],
                                                 data["paths"]["val"], cot_steps))
        (cotdir / "done").write_text(info["student_dir"])
        print("cot", cot_steps, "steps", round(time.time() - started), "s", flush=True)
    student_dir = (cotdir / "done").read_text()
    cot = Student.from_pretrained(student_dir)
    ev = evaluate_text_student(cot, tok, test, 48, 100)
    print("cot acc", ev["accuracy"], "tokens", ev["mean_generated_tokens"], flush=True)
    with torch.no_grad():
        ids = torch.tensor([tok.encode(test[0]["prompt"], add_bos=True)])
        o = cot.run(ids, output_hidden_states=True)
        assert o.hidden_states is not None
        print("embed row norm mean", float(cot.model.embed_tokens.weight.norm(dim=-1).mean()),
              "post-norm hidden norm", float(o.last_hidden_state.norm(dim=-1).mean()),
              "pre-norm", float(o.hidden_states[-1].norm(dim=-1).mean()), flush=True)
    lc = LatentCurriculumConfig.model_validate({**BASE, **VARIANTS[variant]})
    model = Student.from_pretrained(student_dir).train()
    for stage in range(lc.first_stage, lc.max_stage + 1):
        one = lc.model_copy(update={"first_stage": stage, "max_stage": stage})
        started = time.time()
        result = LatentTrainer(one, model, tok, data["train"], log=print).train()
        latent = LatentStudent(model=model, spec=lc.model_copy(update={"max_stage": stage}).spec())
        ev = evaluate_latent(latent, tok, test, 48, 100)
        print(variant, "stage", stage, "train s", round(time.time() - started), "loss", result.stages[-1],
              "acc", ev["accuracy"], "tokens", ev["mean_generated_tokens"], "steps/ex", ev["steps_per_example"],
              flush=True)
        model.train()


if __name__ == "__main__":
    main()
