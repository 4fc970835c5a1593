"""Serve a local teacher over an OpenAI-compatible API: ``python -m training.teacher_server DIR --port P``.

CHECKPOINT is a Distillery artifact or a Hugging Face causal-LM directory (or ``checkpoint:DIR`` /
``hf:DIR`` to choose). Endpoints: ``/v1/models``, ``/v1/completions`` (echo + logprobs, generation),
``/v1/chat/completions`` (text). Binds 127.0.0.1 unless ``--host`` says otherwise; with ``--api-key-env NAME``
every request must carry ``Authorization: Bearer $NAME``. Distill against it from another machine with
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

    from training.teacher_sources.server import FaultPlan, TeacherEngine, TeacherServer
    from training.teacher_sources.spec import parse_teacher_spec
    from training.teachers import build_teacher

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    section = parse_teacher_spec(args.checkpoint)
    if section.kind not in ("checkpoint", "hf"):
        print(
            f"error: {args.checkpoint} is a {section.kind} teacher; the server runs checkpoint or hf "
            "directories",
            file=sys.stderr,
        )
        return 2
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"error: --api-key-env {args.api_key_env}: that environment variable is empty",
                file=sys.stderr,
            )
            return 2
    section = parse_teacher_spec(args.checkpoint, [f"dtype={args.dtype}"])
    faults = ["429"] * args.fail_first + ["drop"] * args.drop_first + [f for f in args.faults.split(",") if f]
    teacher = build_teacher(section)
    name = args.model_name or Path(str(section.path)).resolve().name
    engine = TeacherEngine(teacher, name, max_logprobs=args.max_logprobs)
    server = TeacherServer(engine, args.host, args.port, FaultPlan(faults, args.stall_s), api_key)
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
