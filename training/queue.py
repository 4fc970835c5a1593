"""A training queue: ``python -m training.queue {serve,submit,status} QUEUE_DIR ...``.

* ``serve QUEUE_DIR [--config base.yaml] [--once] [--poll-seconds S] [--max-attempts N]`` runs the daemon
  (:mod:`training.ops.queue_daemon`): files in ``QUEUE_DIR/inbox`` are validated (schema with a quarantine,
  length guardrail) and queued by priority, then the current student is trained on each in turn
  (``init_from`` = the previous file's student); each file ends in ``done/`` or ``failed/`` exactly once,
  across restarts and crashes. Without ``--config`` the base config is ``QUEUE_DIR/base.yaml``.
* ``submit QUEUE_DIR FILE [--priority high|normal|low]`` copies a data file into the inbox atomically.
* ``status QUEUE_DIR`` prints the files in every directory, the file in progress, attempts, the current
  student and whether a daemon is serving the queue, as JSON.

Priorities (first match wins): a sidecar ``inbox/NAME.priority`` holding the word; else the name's suffix
before the extension (``batch.high.jsonl``); else ``normal``. See :mod:`training.ops.queue_layout` for the
directory layout and :mod:`training.ops.queue_journal` for how restarts are made safe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.ops.queue_layout import PRIORITIES, submit
from training.ops.queue_status import queue_status
from training.user_errors import user_error_exit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.queue",
        description="Continue training the current student on data files dropped into a queue directory.",
        epilog="Example: python -m training.queue submit q new.jsonl --priority high; "
               "python -m training.queue serve q --config base.yaml",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("queue_dir", type=Path)
    serve.add_argument("--config", type=Path, default=None,
                       help="base training config (out_dir, data.train, init_from and resume are set per "
                            "file; default QUEUE_DIR/base.yaml)")
    serve.add_argument("--once", action="store_true", help="process everything queued, then exit")
    serve.add_argument("--poll-seconds", type=float, default=5.0, help="inbox scan interval when idle")
    serve.add_argument("--max-attempts", type=int, default=3,
                       help="times a file may be started (failures and crashes) before it goes to failed/")
    serve.add_argument("--settle-seconds", type=float, default=1.0,
                       help="leave inbox files younger than this alone (still being copied)")
    sub_submit = sub.add_parser("submit", help="copy a data file into the inbox")
    sub_submit.add_argument("queue_dir", type=Path)
    sub_submit.add_argument("file", type=Path)
    sub_submit.add_argument("--priority", choices=PRIORITIES, default="normal")
    status = sub.add_parser("status", help="print the queue's state as JSON")
    status.add_argument("queue_dir", type=Path)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from training.kd.config import ConfigFileError
    from training.ops.queue_daemon import DaemonOptions, QueueDaemon, QueueError

    try:
        options = DaemonOptions(queue_dir=args.queue_dir, config=args.config, once=args.once,
                                poll_seconds=args.poll_seconds, max_attempts=args.max_attempts,
                                settle_seconds=args.settle_seconds)
        daemon = QueueDaemon(options)
        summary = daemon.serve()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    except (QueueError, ConfigFileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


@user_error_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "serve":
        return _serve(args)
    try:
        if args.action == "submit":
            if not args.file.is_file():
                raise ValueError(f"{args.file} is not a file")
            out: dict[str, Any] = {"submitted": str(submit(args.queue_dir, args.file, args.priority)),
                                   "priority": args.priority}
        else:
            out = queue_status(args.queue_dir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
