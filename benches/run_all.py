"""Run every benchmark in benches/ (each writes its table to benches/results/) — `make bench`.

    .venv/bin/python benches/run_all.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to benchmarks that support it")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. bench_precision")
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("bench_*.py") if args.only is None or p.stem in args.only)
    failures = []
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.quick and "--quick" in script.read_text():
            cmd.append("--quick")
        print(f"== {script.name}: {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        print(f"== {script.name}: exit {proc.returncode} in {time.perf_counter() - started:.0f}s", flush=True)
        if proc.returncode != 0:
            failures.append(script.name)
    if failures:
        print(f"failed: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
