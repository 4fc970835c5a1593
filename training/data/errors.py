"""Exceptions raised by the data pipeline, each carrying enough context to act on without a debugger."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Base class of every error raised by :mod:`training.data`."""


class MalformedRecordError(DataError):
    """A record could not be parsed or validated and no quarantine was given to put it in."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


class DataQualityError(DataError):
    """More records were quarantined than the configured ``max_bad_fraction`` allows."""

    def __init__(self, n_bad: int, n_total: int, max_bad_fraction: float, quarantine_path: Path,
                 expected_total: int | None = None) -> None:
        fraction = n_bad / n_total if n_total else 1.0
        scope = (f"{n_bad} bad records already exceed the budget of {max_bad_fraction:.2%} of "
                 f"{expected_total} expected" if expected_total is not None and n_total < expected_total
                 else f"{n_bad} of {n_total} records ({fraction:.2%}) are bad, over the limit of "
                      f"{max_bad_fraction:.2%}")
        super().__init__(f"{scope}; see the quarantine file {quarantine_path}, then fix or remove those "
                         "records, or raise max_bad_fraction to accept them")
        self.n_bad = n_bad
        self.n_total = n_total
        self.max_bad_fraction = max_bad_fraction
        self.quarantine_path = quarantine_path


class SequenceTooLongError(DataError):
    """An example (or too large a share of a corpus) does not fit in ``max_length`` tokens."""


class DataFileError(DataError):
    """A data file is missing or is not the format its name says (e.g. a ``.parquet`` that is not Parquet)."""


class StreamStateError(DataError, ValueError):
    """A saved stream position does not belong to this stream: the data files, batching settings, world size
    or tokenizer changed since it was saved."""


def check_data_files(paths: list[Path]) -> None:
    """Raise :class:`DataFileError` naming every path in ``paths`` that is not a file."""
    if missing := [str(p) for p in paths if not p.is_file()]:
        where = "" if all(Path(p).is_absolute() for p in missing) else f" (relative to {Path.cwd()})"
        raise DataFileError(f"data file{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}"
                            f"{where}; fix the path or create the file")
