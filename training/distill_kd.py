"""Distill a teacher into a student: ``python -m training.distill_kd --config X.yaml [key=value ...]``.

Reads a YAML config (see ``configs/``; unknown keys are errors), resumes from the newest valid checkpoint
in ``out_dir`` unless ``resume=never``, trains, evaluates, and writes the student artifact to
``out_dir/student`` (best-by-metric copy in ``out_dir/best``). Ctrl-C or SIGTERM finishes the current
step, writes a checkpoint and exits with code 130; rerun the same command to continue.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from training.kd.config import load_config
from training.kd.trainer import KDTrainer, TrainingDiverged, TrainResult
from training.ops.run_hooks import add_run_control_args, hooks_from_args
from training.user_errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.distill_kd",
        description="Knowledge distillation of a teacher into a student (or from-scratch training without one).",
        epilog="Example: python -m training.distill_kd --config configs/toy_kd.yaml optim.max_steps=200 loss.temperature=2",
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="checkpoint and exit after this many optimizer steps (resume later)")
    add_run_control_args(parser)
    return parser


def run_and_report(train: Callable[[], TrainResult]) -> int:
    """Run a training callable the way every training CLI does: a user error (bad config, missing or bad
    data, teacher or tokenizer, a damaged checkpoint to resume, data changed under ``out_dir``; see
    :mod:`training.user_errors`) is one ``error:`` line and exit code 2, divergence is exit code 1, the
    result is printed as JSON, and an interrupt exits 130 with a hint to rerun."""
    return report_user_errors(lambda: _train_and_report(train))


def _train_and_report(train: Callable[[], TrainResult]) -> int:
    try:
        result = train()
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {"status": result.status, "step": result.step, "metrics": result.metrics,
               "best": result.best_metric, "student_dir": str(result.student_dir) if result.student_dir else None,
               "wall_seconds": round(result.wall_seconds, 2),
               "tokens_per_second": round(result.tokens_per_second, 1), "data": result.data}
    print(json.dumps(summary, indent=2, sort_keys=True))
    if result.data.get("quarantined_lines"):
        print(f"note: {result.data['quarantined_lines']} malformed training lines were quarantined (not trained "
              f"on): see {result.data['quarantine_file']}", file=sys.stderr)
    if result.status == "interrupted":
        print(f"interrupted at step {result.step}; {result.checkpoint_message()}. Rerun the same command to resume.",
              file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def train() -> TrainResult:
        cfg = load_config(args.config, args.overrides)
        trainer = KDTrainer(cfg, stop_after_steps=args.stop_after_steps, hooks=hooks_from_args(args, cfg.out_dir))
        return trainer.train()

    return run_and_report(train)


if __name__ == "__main__":
    sys.exit(main())
