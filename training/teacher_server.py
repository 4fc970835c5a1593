"""Serve a local teacher over an OpenAI-compatible API: ``python -m training.teacher_server DIR --port P``.

CHECKPOINT is a Distillery artifact or a Hugging Face causal-LM directory (or ``checkpoint:DIR`` /
``hf:DIR`` to choose). Endpoints: ``/v1/models``, ``/v1/completions`` (echo + logprobs, generation),
``/v1/chat/completions`` (text). Binds 127.0.0.1 unless ``--host`` says otherwise; with ``--api-key-env NAME``
every request must carry ``Authorization: Bearer $NAME``. Work per request is bounded: prompt + completion fit the
model's context (``max_tokens`` is clamped, a longer prompt gets 400), generation stops when the client
disconnects, bodies over ``--max-body-bytes`` get 413, and a client gets ``--read-timeout`` seconds to send
its request. A missing or unreadable teacher directory is a one-line error and exit code 2. Distill against it from another machine with
``teacher: {kind: http, url: http://HOST:PORT/v1, model: NAME, tokenizer: DIR}``.

Testing aids (not for production): ``--fail-first N`` answers the first N POST requests with HTTP 429,
``--drop-first N`` then closes the next N connections without an answer, ``--faults 429,drop,503,stall``
injects an explicit sequence (``stall`` waits ``--stall-s`` seconds before answering).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Kept in step with training.teachers.server (not imported here so that --help stays fast).
MAX_BODY_BYTES = 4 << 20
READ_TIMEOUT_S = 30.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _one_line(exc: BaseException) -> str:
    """An exception as one line (its message's lines joined), for ``error: ...`` on stderr."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (OSError, ValueError, RuntimeError)) else f"{type(exc).__name__}: {text}"


def _load_teacher(checkpoint: str, dtype: str) -> tuple[Any, Any]:
    """-> (teacher section, teacher); a checkpoint that is not a checkpoint or hf directory is a ValueError."""
    from training.teachers.factory import build_teacher
    from training.teachers.spec import parse_teacher_spec

    kind, sep, rest = checkpoint.partition(":")
    path = Path(rest if sep and kind in ("checkpoint", "hf") else checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    section = parse_teacher_spec(checkpoint)
    if section.kind not in ("checkpoint", "hf"):
        raise ValueError(
            f"{checkpoint} is a {section.kind} teacher; the server runs checkpoint or hf directories"
        )
    section = parse_teacher_spec(checkpoint, [f"dtype={dtype}"])
    return section, build_teacher(section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.teacher_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", help="teacher directory (Distillery artifact or HF), or checkpoint:DIR / hf:DIR"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    parser.add_argument(
        "--model-name", default=None, help="model id clients send (default: the directory name)"
    )
    parser.add_argument("--max-logprobs", type=int, default=64, help="largest logprobs a request may ask for")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="require the API key held in environment variable NAME",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=MAX_BODY_BYTES,
        help=f"largest request body accepted; larger ones get 413 (default {MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=READ_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time a client has to send its request headers (per read) and body (default {READ_TIMEOUT_S:g})",
    )
    testing = parser.add_argument_group("fault injection (testing aids only)")
    testing.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="answer the first N POSTs with 429"
    )
    testing.add_argument(
        "--drop-first",
        type=int,
        default=0,
        metavar="N",
        help="then drop the next N connections without an answer",
    )
    testing.add_argument(
        "--faults",
        default="",
        help="comma list of faults for the next POSTs: 429,500,502,503,504,"
        "drop,stall (after --fail-first / --drop-first)",
    )
    testing.add_argument("--stall-s", type=float, default=2.0, help="delay of a 'stall' fault")
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    from training.teachers.server import FaultPlan, TeacherEngine, TeacherServer

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"error: --api-key-env {args.api_key_env}: that environment variable is empty",
                file=sys.stderr,
            )
            return 2
    faults = ["429"] * args.fail_first + ["drop"] * args.drop_first + [f for f in args.faults.split(",") if f]
    try:
        plan = FaultPlan(faults, args.stall_s)
    except ValueError as exc:
        print(f"error: --faults: {exc}", file=sys.stderr)
        return 2
    try:
        section, teacher = _load_teacher(args.checkpoint, args.dtype)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported in one line, not a traceback
        print(f"error: cannot load teacher {args.checkpoint}: {_one_line(exc)}", file=sys.stderr)
        return 2
    name = args.model_name or Path(str(section.path)).resolve().name
    engine = TeacherEngine(teacher, name, max_logprobs=args.max_logprobs)
    try:
        server = TeacherServer(
            engine,
            args.host,
            args.port,
            plan,
            api_key,
            max_body_bytes=args.max_body_bytes,
            read_timeout_s=args.read_timeout,
        )
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"serving {name} ({section.kind} {section.path}) on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
