"""Control a running training job: ``python -m training.runctl {status,pause,resume,stop} RUN_DIR``.

``status`` prints ``RUN_DIR/run_state.json``, whether its process is alive and the last control command;
``pause``, ``resume`` and ``stop`` write ``RUN_DIR/control.json`` (or, with ``--via signal``, send SIGUSR1 /
SIGTERM to the run's pid). The protocol is documented in :mod:`training.ops.run_control`.

``pause`` keeps the process and all its state; ``stop`` checkpoints and ends the run with status
``stopped`` (rerun the same training command to continue from that checkpoint). Every command is logged
as a JSON line with the run's id in ``RUN_DIR/logs/control.jsonl``.

Exit codes: 0 done, 1 ``--wait`` timed out or the process went away, 2 no live run / bad arguments.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from training.ops.run_control import RunControlError, issue_command, send_signal, status_report, wait_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.runctl",
        description="Inspect, pause, resume or stop a training run through RUN_DIR/control.json or signals.",
        epilog="Example: python -m training.runctl pause runs/toy --wait 30; python -m training.runctl "
               "status runs/toy. Signals work too: kill -USR1 PID toggles pause, kill -TERM PID checkpoints "
               "and exits.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    status = sub.add_parser("status", help="print run_state.json, liveness and the last command as JSON")
    status.add_argument("run_dir", type=Path, help="the run's out_dir")
    for action, text in (("pause", "block the run after its current optimizer step (process and state kept)"),
                         ("resume", "continue a paused run"),
                         ("stop", "checkpoint after the current step and end the run (status 'stopped')")):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("run_dir", type=Path, help="the run's out_dir")
        cmd.add_argument("--via", choices=("file", "signal"), default="file",
                         help="control.json (default) or SIGUSR1/SIGTERM to the run's pid")
        cmd.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                         help="wait until the run has acted on the command (exit 1 on timeout)")
        cmd.add_argument("--reason", default=None, help="free text recorded with the command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "status":
            print(json.dumps(status_report(args.run_dir), indent=2, sort_keys=True))
            return 0
        seq: int | None = None
        if args.via == "file":
            seq = issue_command(args.run_dir, args.action, args.reason).seq
            out: dict[str, Any] = {"command": args.action, "via": "file", "seq": seq}
        else:
            sig = send_signal(args.run_dir, args.action)
            out = {"command": args.action, "via": "signal",
                   "signal": signal.Signals(sig).name if sig is not None else None}
    except RunControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.wait is not None:
        try:
            state = wait_for(args.run_dir, args.action, seq, args.wait)
        except RunControlError as exc:
            print(json.dumps(out, sort_keys=True))
            print(f"error: {exc}", file=sys.stderr)
            return 1
        out.update(state=state.state, step=state.step)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
