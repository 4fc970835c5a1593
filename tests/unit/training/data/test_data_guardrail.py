"""The length guardrail: exact percentiles and refusal of silent truncation."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_data_support import CharTokenizer, make_records, write_jsonl, write_parquet

from training.data import (
    DataError,
    QuarantineLog,
    SequenceTooLongError,
    check_lengths,
    histogram_percentile,
    length_report,
)

TOK = CharTokenizer()


@given(values=st.lists(st.integers(1, 500), min_size=1, max_size=200), q=st.floats(0, 100))
def test_histogram_percentile_matches_numpy(values: list[int], q: float) -> None:
    assert histogram_percentile(Counter(values), q) == pytest.approx(np.percentile(values, q), abs=1e-9)


def test_length_report_matches_numpy_over_all_files(tmp_path: Path) -> None:
    first, second = make_records(0, 37), make_records(37, 26)
    paths = [write_jsonl(tmp_path / "a.jsonl", first), write_parquet(tmp_path / "b.parquet", second)]
    lengths = np.array([len(r["prompt"]) + len(r["completion"]) + 2 for r in first + second])
    report = length_report(paths, TOK, max_length=30)
    assert report.n_examples == 63
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert getattr(report, name) == pytest.approx(np.percentile(lengths, q))
    assert report.max == lengths.max()
    assert report.mean == pytest.approx(lengths.mean())
    assert report.n_over == int((lengths > 30).sum()) > 0
    assert report.share_over == pytest.approx(report.n_over / 63)
    assert report.needs_truncation


def test_length_report_quarantines_bad_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [*make_records(0, 4), "{bad"])
    log = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=0.5)
    assert length_report([path], TOK, max_length=64, quarantine=log).n_examples == 4
    assert (log.n_good, log.n_bad) == (4, 1)


def test_length_report_of_no_valid_example_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ["{bad"])
    with pytest.raises(DataError, match="no valid examples"):
        length_report([path], TOK, max_length=64, quarantine=QuarantineLog(tmp_path / "q.jsonl", 1.0))


def test_check_lengths_refuses_too_much_truncation_with_the_percentiles(tmp_path: Path) -> None:
    records = [{"id": str(i), "prompt": "p" * i, "completion": ""} for i in range(100)]
    report = length_report([write_jsonl(tmp_path / "a.jsonl", records)], TOK, max_length=91)
    assert (report.n_over, report.share_over) == (10, 0.1)
    with pytest.raises(SequenceTooLongError) as caught:
        check_lengths(report, max_truncated_share=0.05, allow_truncation=False)
    message = str(caught.value)
    for fragment in ("10 of 100 examples (10.00%)", "max_length=91", "p50=51.5", "p95=96.05",
                     "p99=100.01", "max=101", "at least 101"):
        assert fragment in message
    check_lengths(report, max_truncated_share=0.1, allow_truncation=False)
    check_lengths(report, max_truncated_share=0.0, allow_truncation=True)


def test_the_hint_never_suggests_a_max_length_below_the_current_one(tmp_path: Path) -> None:
    """p99 already fits but the limit allows no truncation: the hint names the longest example or truncation."""
    records = [{"id": str(i), "prompt": "p" * 10, "completion": ""} for i in range(199)]
    records.append({"id": "long", "prompt": "p" * 100, "completion": ""})
    report = length_report([write_jsonl(tmp_path / "a.jsonl", records)], TOK, max_length=50)
    assert report.p99 < 50 and report.n_over == 1
    with pytest.raises(SequenceTooLongError) as caught:
        check_lengths(report, max_truncated_share=0.0, allow_truncation=False)
    message = str(caught.value)
    suggested = [int(n) for n in re.findall(r"max_length(?: to at least|=)\s*(\d+)", message)]
    assert suggested and min(suggested) >= 50, message
    assert f"max_length={report.max} (the longest)" in message and "truncat" in message
