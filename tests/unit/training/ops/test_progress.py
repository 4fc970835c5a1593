"""Progress bars do not flood non-terminal logs (issue 16: ~7,500 tqdm lines in ``make distill``'s log)."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest

from training.ops.progress import INTERVAL_ENV, LOG_INTERVAL_S, is_terminal, log_interval, progress

REPO = Path(__file__).resolve().parents[4]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(text: str) -> list[str]:
    """Log lines as a log viewer shows them: every carriage return or newline starts one."""
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def _run(stream: io.StringIO, steps: int = 3000) -> list[str]:
    bar = progress(total=steps, desc="distill", unit="step", dynamic_ncols=True, file=stream)
    for step in range(steps):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
        bar.set_description(f"distill {step}")
    bar.close()
    return _lines(stream.getvalue())


def test_non_terminal_stream_gets_a_few_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    lines = _run(io.StringIO())
    assert 1 <= len(lines) <= 3, lines  # first line, last line, at most one timed line in between
    assert "3000/3000" in lines[-1]


def test_terminal_still_redraws() -> None:
    """On a terminal the helper is plain tqdm (the test above is not passing because nothing prints)."""
    assert len(_run(_Terminal(), steps=200)) >= 100


def test_interval_zero_disables_bars_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert _run(io.StringIO()) == []
    items = list(progress(range(5), file=io.StringIO()))
    assert items == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("raw", "expected"), [("", LOG_INTERVAL_S), ("5", 5.0), ("nan", LOG_INTERVAL_S),
                                               ("-1", LOG_INTERVAL_S), ("x", LOG_INTERVAL_S)])
def test_log_interval_env(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv(INTERVAL_ENV, raw)
    assert log_interval() == expected


def test_is_terminal_handles_odd_streams() -> None:
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(None) and not is_terminal(closed) and not is_terminal(io.StringIO())
    assert is_terminal(_Terminal())


def test_every_progress_bar_goes_through_the_helper() -> None:
    """No module imports tqdm itself (a bar built directly would flood logs again)."""
    found = subprocess.run(["grep", "-rnE", r"^\s*(from tqdm|import tqdm)", "training", "conversion", "arbiter",
                            "scripts", "--include=*.py"], cwd=REPO, capture_output=True, text=True, check=False)
    offenders = [line for line in found.stdout.splitlines() if not line.startswith("training/ops/progress.py:")]
    assert offenders == []
