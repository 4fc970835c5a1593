"""Group failing tests the way a person triaging would: by exception type and message pattern.

A pattern is the first line of the failure message with the variable parts (numbers, quoted
strings, addresses) replaced, so ``assert 2 == 3`` and ``assert 5 == 7`` land in one category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from scripts.readiness.junit import TestCase

_LOCATION = re.compile(r"^(?P<path>\S[^:]*):(?P<line>\d+): (?P<exc>[A-Za-z_][\w.]*)\s*$")
_E_LINE = re.compile(r"^E\s+(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")
_MESSAGE_EXC = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failed)):\s?")
_PHASE_WRAPPER = re.compile(r'^failed on (?:setup|teardown) with "(?P<inner>.*)"$', re.DOTALL)
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")
_SPACES = re.compile(r"\s+")
_PATTERN_LENGTH = 100


@dataclass(frozen=True)
class Failure:
    """The triage view of one failing or erroring test."""

    test_id: str
    file: str
    exception: str
    pattern: str
    phase: str

    @property
    def category(self) -> str:
        """Human label of the failure category, e.g. ``AssertionError: assert <n> == <n>``."""
        label = f"{self.exception}: {self.pattern}" if self.pattern else self.exception
        if self.phase in ("setup", "teardown", "collection"):
            return f"{label} (during {self.phase})"
        return label


@dataclass
class FailureGroup:
    """Tests that failed the same way."""

    category: str
    exception: str
    pattern: str
    phase: str
    tests: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of tests in the group."""
        return len(self.tests)

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "category": self.category,
            "exception": self.exception,
            "pattern": self.pattern,
            "phase": self.phase,
            "count": self.count,
            "files": list(self.files),
            "tests": list(self.tests),
        }


def normalize_message(message: str) -> str:
    """Reduce a failure message's first line to a pattern (variable parts replaced, length capped)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = _QUOTED.sub("<str>", first)
    first = _ADDRESS.sub("<addr>", first)
    first = _NUMBER.sub("<n>", first)
    first = _SPACES.sub(" ", first).strip()
    if len(first) > _PATTERN_LENGTH:
        first = first[: _PATTERN_LENGTH - 3] + "..."
    return first


def exception_of(case: TestCase) -> str:
    """The exception type of a failure: from pytest's crash location line, else from the message."""
    lines = [line for line in case.details.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _LOCATION.match(line.strip())
        if match:
            return match.group("exc")
    for line in reversed(lines):
        match = _E_LINE.match(line)
        if match:
            return match.group("exc")
    message = _inner_message(case)
    match = _MESSAGE_EXC.match(message)
    if match:
        return match.group("exc")
    if message.startswith("assert"):
        return "AssertionError"
    if case.phase == "collection":
        return "CollectionError"
    return "UnknownError"


def _inner_message(case: TestCase) -> str:
    message = case.message.strip()
    wrapped = _PHASE_WRAPPER.match(message)
    return wrapped.group("inner").strip() if wrapped else message


def _pattern_of(case: TestCase, exception: str) -> str:
    message = _inner_message(case)
    if case.phase == "collection":
        # pytest's message is just "collection failure"; the cause is the last "E   ..." line.
        e_lines = [line[1:].strip() for line in case.details.splitlines() if line.startswith("E ")]
        message = e_lines[-1] if e_lines else ""
    short_name = exception.rsplit(".", 1)[-1]
    for prefix in (f"{exception}:", f"{short_name}:"):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    return normalize_message(message)


def to_failure(case: TestCase) -> Failure:
    """Classify one failed or errored test."""
    exception = exception_of(case)
    return Failure(
        test_id=case.test_id,
        file=case.file or "<unknown file>",
        exception=exception,
        pattern=_pattern_of(case, exception),
        phase=case.phase,
    )


@dataclass(frozen=True)
class Triage:
    """Failures grouped overall (``top``) and per test file (``by_file``), largest groups first."""

    top: list[FailureGroup]
    by_file: dict[str, list[FailureGroup]]

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "top_categories": [group.to_dict() for group in self.top],
            "by_file": {file: [group.to_dict() for group in groups] for file, groups in self.by_file.items()},
        }


def _group(failures: Iterable[Failure]) -> list[FailureGroup]:
    groups: dict[tuple[str, str, str], FailureGroup] = {}
    for failure in failures:
        key = (failure.exception, failure.pattern, failure.phase)
        group = groups.get(key)
        if group is None:
            group = FailureGroup(failure.category, failure.exception, failure.pattern, failure.phase)
            groups[key] = group
        group.tests.append(failure.test_id)
        if failure.file not in group.files:
            group.files.append(failure.file)
    return sorted(groups.values(), key=lambda g: (-g.count, g.category))


def triage(cases: Iterable[TestCase]) -> Triage:
    """Group the failed and errored tests among ``cases`` by category, overall and per file."""
    failures = [to_failure(case) for case in cases if case.is_problem]
    per_file: dict[str, list[Failure]] = {}
    for failure in failures:
        per_file.setdefault(failure.file, []).append(failure)
    by_file = {file: _group(items) for file, items in sorted(per_file.items())}
    return Triage(top=_group(failures), by_file=by_file)
