"""Tiny real training runs for the run-control, queue and versions integration tests.

Everything is built locally in a temp dir: a byte-level BPE tokenizer trained on bundled-task texts, train and
validation JSONL files, and a KD config YAML for a 2-layer, hidden-32 student trained from scratch (teacher
null: the same loop as distillation). Subprocesses run with one torch thread and read no user config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from training.data.toy_data import write_jsonl
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer

REPO = Path(__file__).resolve().parents[2]


def build_tokenizer(directory: Path, seed: int = 0) -> Path:
    """Train a ~300-id tokenizer on arithmetic texts and save it to ``directory``."""
    texts = get_task("arithmetic").sample_texts(300, seed)
    DistilleryTokenizer.train(texts, vocab_size=300).save(directory)
    return directory


def write_task_data(path: Path, n: int, seed: int, task: str = "arithmetic") -> Path:
    """``n`` bundled-task examples as JSONL."""
    write_jsonl(path, get_task(task).generate(n, seed))
    return path


def kd_config(root: Path, tokenizer: Path, train: list[Path], val: list[Path] | None = None,
              out_dir: Path | None = None, **sections: Any) -> dict[str, Any]:
    """A tiny from-scratch KD config as a dict; ``sections`` replace or update top-level keys."""
    cfg: dict[str, Any] = {
        "out_dir": str(out_dir or root / "run"),
        "seed": 0,
        "tokenizer": str(tokenizer),
        "task": "arithmetic",
        "teacher": None,
        "student": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128},
        "data": {"train": [str(p) for p in train], "val": [str(p) for p in (val or [])], "max_length": 96,
                 "batch_size": 8, "shuffle_buffer": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 40},
        "eval": {"every": 1000, "max_batches": 2, "generate_examples": 0},
        "checkpoint": {"every": 1000, "keep_last": 3},
        "num_threads": 1,
        "progress": False,
        "tensorboard": False,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


def tiny_project(root: Path, n_train: int = 200, n_val: int = 16) -> dict[str, Path]:
    """Tokenizer + train/val files under ``root``."""
    tok = build_tokenizer(root / "tokenizer")
    train = write_task_data(root / "data" / "train.jsonl", n_train, seed=1)
    val = write_task_data(root / "data" / "val.jsonl", n_val, seed=2)
    return {"tokenizer": tok, "train": train, "val": val}


def subprocess_env() -> dict[str, str]:
    """Environment for child Pythons: repo importable, one thread everywhere."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_module(module: str, *args: str, timeout: float = 60.0, cwd: Path | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` to completion, output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_module(module: str, *args: str, log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m module args`` in the background, stdout+stderr to ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 - the child owns it; closed by the OS with the process
    try:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=subprocess_env(),
                                stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
             proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` (and the child's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}:\n{tail}")
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None while it does not exist (or is being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a child we started (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# Until ``training.distill_kd`` calls ``add_run_control_args``/``hooks_from_args`` itself, this runs its real
# ``main()`` with exactly that wiring patched in (parser flags + hooks passed to KDTrainer).
_DISTILL_SHIM = """
import sys
import training.distill_kd as cli
from training.ops.run_hooks import add_run_control_args, hooks_from_args

_build = cli.build_parser

def build_parser():
    parser = _build()
    add_run_control_args(parser)
    return parser

class _Trainer(cli.KDTrainer):
    def __init__(self, cfg, **kwargs):
        args = build_parser().parse_args(sys.argv[1:])
        super().__init__(cfg, hooks=hooks_from_args(args, cfg.out_dir), **kwargs)

cli.build_parser = build_parser
cli.KDTrainer = _Trainer
sys.exit(cli.main())
"""


def distill_wired() -> bool:
    """Whether ``python -m training.distill_kd`` already takes the run-control flags."""
    from training.distill_kd import build_parser

    return any("--status-port" in action.option_strings for action in build_parser()._actions)


def distill_command(*args: str) -> list[str]:
    """argv running ``training.distill_kd`` with run control (directly once wired, else via the shim)."""
    if distill_wired():
        return [sys.executable, "-m", "training.distill_kd", *args]
    return [sys.executable, "-c", _DISTILL_SHIM, *args]


def start_distill(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start a distill run with run control in the background, stdout+stderr to ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(distill_command(*args), cwd=REPO, env=subprocess_env(), stdout=handle,
                                stderr=subprocess.STDOUT)
    finally:
        handle.close()
