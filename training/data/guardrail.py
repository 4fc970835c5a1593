"""A length guardrail: measure a corpus's token lengths before training and refuse silent truncation."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from training.data.encoding import TokenizerLike, example_length
from training.data.errors import DataError, SequenceTooLongError
from training.data.quarantine import QuarantineLog
from training.data.reader import read_examples


@dataclass(frozen=True, slots=True)
class LengthReport:
    """Token lengths (``bos + prompt + completion + eos``, untruncated) of every valid example."""

    max_length: int
    n_examples: int
    p50: float
    p95: float
    p99: float
    max: int
    mean: float
    n_over: int
    share_over: float

    @property
    def needs_truncation(self) -> bool:
        """Whether a stream over this corpus must be built with ``truncate=True``."""
        return self.n_over > 0

    def summary(self) -> str:
        return (f"{self.n_examples} examples, token lengths p50={self.p50:g} p95={self.p95:g} "
                f"p99={self.p99:g} max={self.max}; {self.n_over} ({self.share_over:.2%}) over "
                f"max_length={self.max_length}")

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def histogram_percentile(histogram: Mapping[int, int], q: float) -> float:
    """The ``q``-th percentile of the values a histogram counts, as ``numpy.percentile`` (linear) computes it.

    Exact, in memory proportional to the number of distinct values rather than the number of examples.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    items = sorted((value, count) for value, count in histogram.items() if count > 0)
    n = sum(count for _, count in items)
    if n == 0:
        raise ValueError("percentile of an empty histogram")
    position = (n - 1) * q / 100.0
    low_index = math.floor(position)
    fraction = position - low_index
    low = _value_at(items, low_index)
    high = _value_at(items, min(low_index + 1, n - 1))
    return low + (high - low) * fraction


def _value_at(items: list[tuple[int, int]], index: int) -> int:
    """The ``index``-th smallest value (0-based) of a sorted histogram."""
    seen = 0
    for value, count in items:
        seen += count
        if index < seen:
            return value
    raise IndexError(index)


def length_report(paths: Iterable[str | Path], tokenizer: TokenizerLike, max_length: int,
                  quarantine: QuarantineLog | None = None) -> LengthReport:
    """Tokenize every valid example of ``paths`` (streaming) and summarise the token lengths.

    Bad records go to ``quarantine`` (or raise without one); call ``quarantine.check()`` afterwards.

    Raises:
        DataError: when the files hold no valid example.
    """
    path_list = [Path(p) for p in paths]
    histogram: Counter[int] = Counter()
    for path in path_list:
        for _, example in read_examples(path, quarantine):
            histogram[example_length(example, tokenizer)] += 1
    n = sum(histogram.values())
    if n == 0:
        raise DataError(f"no valid examples in {[str(p) for p in path_list]}")
    n_over = sum(count for length, count in histogram.items() if length > max_length)
    return LengthReport(
        max_length=max_length, n_examples=n,
        p50=histogram_percentile(histogram, 50), p95=histogram_percentile(histogram, 95),
        p99=histogram_percentile(histogram, 99), max=max(histogram),
        mean=sum(length * count for length, count in histogram.items()) / n,
        n_over=n_over, share_over=n_over / n)


def check_lengths(report: LengthReport, max_truncated_share: float, allow_truncation: bool) -> None:
    """Refuse a corpus whose share of over-long examples exceeds ``max_truncated_share``.

    With ``allow_truncation=True`` any share passes (truncation was chosen knowingly). Whenever
    ``report.needs_truncation`` the stream must then run with ``truncate=True``.

    Raises:
        SequenceTooLongError: naming the share, the limit and the p50/p95/p99/max lengths.
    """
    if not 0.0 <= max_truncated_share <= 1.0:
        raise ValueError(f"max_truncated_share must be in [0, 1], got {max_truncated_share}")
    if allow_truncation or report.share_over <= max_truncated_share:
        return
    raise SequenceTooLongError(
        f"{report.n_over} of {report.n_examples} examples ({report.share_over:.2%}) exceed "
        f"max_length={report.max_length}, over the allowed {max_truncated_share:.2%}; token lengths "
        f"p50={report.p50:g} p95={report.p95:g} p99={report.p99:g} max={report.max}. {length_hint(report)}")


def length_hint(report: LengthReport) -> str:
    """What to do about over-long examples: a ``max_length`` above the current one, or truncation.

    When p99 already fits, raising ``max_length`` to p99 would change nothing: the few longer examples need
    ``max_length`` = the longest one, or truncation accepted for them.
    """
    allow = (f"allow truncation (truncate=true, or max_truncated_share of at least {report.share_over:.2%} "
             f"to truncate these {report.n_over})")
    if math.ceil(report.p99) > report.max_length:
        return f"Raise max_length to at least {math.ceil(report.p99)} (p99), or {allow}."
    return (f"max_length={report.max_length} already covers p99; the {report.n_over} longer examples need "
            f"max_length={report.max} (the longest), or {allow}.")
