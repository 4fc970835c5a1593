"""Parse a JUnit XML report (as written by ``pytest --junitxml``) into one outcome per test.

The report's ``tests``/``failures`` attributes are not trusted: every ``<testcase>`` element is
read and tests are deduplicated by ``classname`` + ``name``. pytest writes two elements for a
test that fails in its call and then errors in teardown; such a test counts once, as failed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from scripts.readiness.errors import ReadinessError

OUTCOMES: tuple[str, ...] = ("passed", "failed", "errored", "skipped", "xfailed", "xpassed")

# Higher wins when one test has several <testcase> elements.
_SEVERITY: dict[str, int] = {
    "passed": 0,
    "xpassed": 1,
    "xfailed": 2,
    "skipped": 3,
    "errored": 4,
    "failed": 5,
}

_XPASS_MESSAGE = "xfail-marked test passes unexpectedly"


@dataclass(frozen=True)
class TestCase:
    """One test and its outcome.

    ``phase`` tells where a failure or error happened: ``call``, ``setup``, ``teardown``,
    ``collection`` or ``internal`` (empty for tests that did not fail).
    """

    __test__ = False  # not a pytest test class

    classname: str
    name: str
    outcome: str
    file: str | None = None
    phase: str = ""
    message: str = ""
    details: str = ""
    teardown_error: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """The deduplication key: ``(classname, name)``."""
        return (self.classname, self.name)

    @property
    def test_id(self) -> str:
        """A pytest-style node id (``path.py::Class::test``) when the file is known."""
        if self.file is None:
            return f"{self.classname}::{self.name}" if self.classname else self.name
        module_parts = _module_parts(self.file)
        class_parts = self.classname.split(".")[len(module_parts) :] if self.classname else []
        return "::".join([self.file, *class_parts, self.name]) if self.classname else self.file

    @property
    def is_problem(self) -> bool:
        """True for failed and errored tests."""
        return self.outcome in ("failed", "errored")


@dataclass(frozen=True)
class TestRun:
    """All tests of one JUnit report."""

    __test__ = False

    cases: tuple[TestCase, ...]
    elements: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of distinct tests."""
        return len(self.cases)

    @property
    def executed(self) -> int:
        """Tests that ran to a verdict (passed, xpassed, failed, errored)."""
        return sum(self.counts[o] for o in ("passed", "xpassed", "failed", "errored"))

    @property
    def problems(self) -> list[TestCase]:
        """Failed and errored tests, in report order."""
        return [case for case in self.cases if case.is_problem]

    @property
    def teardown_errors(self) -> int:
        """Failed tests that also errored in teardown (pytest counts those as one failure plus one error)."""
        return sum(1 for case in self.cases if case.teardown_error)


def _module_parts(file: str) -> list[str]:
    stem = file[:-3] if file.endswith(".py") else file
    return [part for part in stem.split("/") if part]


def resolve_test_file(classname: str, name: str, root: Path | None) -> str | None:
    """Map a JUnit ``classname`` (``tests.unit.test_x.TestY``) to the test file path, relative to ``root``.

    Tries the longest dotted prefix that exists as ``<prefix>.py`` under ``root``; without a root
    (or when nothing exists there) it drops trailing parts that look like class names.
    Collection errors have an empty classname and the module path in ``name``.
    """
    dotted = classname or name
    if not dotted:
        return None
    parts = dotted.split(".")
    if root is not None:
        for end in range(len(parts), 0, -1):
            candidate = "/".join(parts[:end]) + ".py"
            if (root / candidate).is_file():
                return candidate
    module = list(parts)
    while len(module) > 1 and module[-1][:1].isupper():
        module.pop()
    return "/".join(module) + ".py"


def _outcome_of(element: ET.Element) -> tuple[str, str, str, str]:
    """Return ``(outcome, phase, message, details)`` for one ``<testcase>`` element."""
    failure = element.find("failure")
    if failure is not None:
        return "failed", "call", failure.get("message", ""), failure.text or ""
    error = element.find("error")
    if error is not None:
        message = error.get("message", "")
        if message.startswith("failed on setup"):
            phase = "setup"
        elif message.startswith("failed on teardown"):
            phase = "teardown"
        elif message == "collection failure":
            phase = "collection"
        elif message == "internal error":
            phase = "internal"
        else:
            phase = "error"
        return "errored", phase, message, error.text or ""
    skipped = element.find("skipped")
    if skipped is not None:
        message = skipped.get("message", "")
        if skipped.get("type") == "pytest.xfail":
            return "xfailed", "", message, skipped.text or ""
        if message == _XPASS_MESSAGE:
            return "xpassed", "", message, ""
        return "skipped", "", message, skipped.text or ""
    return "passed", "", "", ""


def _merge(first: TestCase, second: TestCase) -> TestCase:
    worse, other = (
        (first, second) if _SEVERITY[first.outcome] >= _SEVERITY[second.outcome] else (second, first)
    )
    teardown = worse.teardown_error or other.teardown_error
    if worse.outcome == "failed" and other.outcome == "errored" and other.phase == "teardown":
        teardown = True
    return replace(worse, teardown_error=teardown)


def count_outcomes(cases: Iterable[TestCase]) -> dict[str, int]:
    """Count tests per outcome; every outcome in ``OUTCOMES`` is present."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for case in cases:
        counts[case.outcome] += 1
    return counts


def parse_junit(text: str | bytes, root: Path | None = None, label: str = "JUnit report") -> TestRun:
    """Parse JUnit XML text into a :class:`TestRun` (one outcome per ``classname`` + ``name``).

    ``root`` is the project directory, used to map class names to test files; ``label`` names the
    report in error messages (``JUnit report <file>`` when read from a file).
    Raises :class:`ReadinessError` when the text is not JUnit XML.
    """
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ReadinessError(f"{label} is not valid XML: {exc}") from exc
    if tree.tag not in ("testsuites", "testsuite"):
        raise ReadinessError(f"{label} has root element <{tree.tag}>, expected <testsuites> or <testsuite>")
    by_key: dict[tuple[str, str], TestCase] = {}
    elements = 0
    for element in tree.iter("testcase"):
        elements += 1
        classname = element.get("classname", "")
        name = element.get("name", "")
        outcome, phase, message, details = _outcome_of(element)
        file_attr = element.get("file")
        file = file_attr.replace("\\", "/") if file_attr else resolve_test_file(classname, name, root)
        case = TestCase(classname, name, outcome, file, phase, message, details)
        previous = by_key.get(case.key)
        by_key[case.key] = case if previous is None else _merge(previous, case)
    cases = tuple(by_key.values())
    return TestRun(cases=cases, elements=elements, counts=count_outcomes(cases))


def load_junit(path: Path, root: Path | None = None) -> TestRun:
    """Read and parse a JUnit XML file; a missing or unreadable file is a :class:`ReadinessError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReadinessError(f"cannot read JUnit report {path}: {exc.strerror or exc}") from exc
    return parse_junit(data, root, f"JUnit report {path}")
