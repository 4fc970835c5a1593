"""Progress bars for every long loop (training, teacher cache, teacher text), through one helper.

On a terminal a bar redraws as usual. When the stream is not a terminal (``make distill > log``, CI, a
queue daemon's log file) every redraw would become a line of the log, so there the bar prints at most one
line every :data:`LOG_INTERVAL_S` seconds (plus its first and last line), and ``set_postfix`` /
``set_description`` stop forcing redraws of their own.
``DISTILLERY_PROGRESS_INTERVAL_S`` sets the interval; ``0`` turns bars off in logs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
INTERVAL_ENV = "DISTILLERY_PROGRESS_INTERVAL_S"


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, closed or missing streams)."""
    if stream is None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def log_interval() -> float:
    """Seconds between progress lines in a non-terminal log (``DISTILLERY_PROGRESS_INTERVAL_S``)."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else LOG_INTERVAL_S
    except ValueError:
        return LOG_INTERVAL_S
    return value if math.isfinite(value) and value >= 0 else LOG_INTERVAL_S


class _LogProgress(tqdm):  # type: ignore[type-arg]
    """A bar writing to a log: postfix and description changes wait for the next timed line."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        del refresh
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        del refresh
        super().set_description(desc, refresh=False)


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:  # type: ignore[type-arg]
    """``tqdm(iterable, **kwargs)`` that does not flood logs: on a non-terminal ``file`` (default stderr)
    it prints at most a line every :func:`log_interval` seconds, or nothing when that is 0."""
    stream = kwargs.get("file")
    if stream is None:
        stream = sys.stderr
    if is_terminal(stream):
        return tqdm(iterable, **kwargs)
    interval = log_interval()
    if interval == 0:
        kwargs["disable"] = True
    kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.0), interval)
    # tqdm's monitor thread redraws a bar idle for maxinterval seconds; never more often than the interval
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0.0), interval)
    kwargs["miniters"] = kwargs.get("miniters") or 1
    kwargs["dynamic_ncols"] = False
    return _LogProgress(iterable, **kwargs)
