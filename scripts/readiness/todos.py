"""Find TODO/FIXME/XXX/HACK comments, and interim phrasing in comments, with ``tokenize``.

Only real comment tokens are examined, so markers inside strings and docstrings are ignored,
and every file is tokenized exactly once. Each finding gets:

- a **confidence**: 0.95 for an upper-case marker opening the comment (``# TODO: ...``),
  0.7 for one later in the comment, 0.6 for a lower-case ``# todo: ...``, 0.35 for phrasing
  such as "for now" or "placeholder" without a marker;
- a **risk**: ``blocker`` for a blocking tag (``# TODO(blocker): ...``), ``high`` for
  FIXME/XXX/HACK in a critical path, ``medium`` for FIXME/XXX/HACK elsewhere or TODO/phrasing
  in a critical path, ``low`` otherwise;
- whether it sits in a critical path (a critical module, or a file under a critical directory).
"""

from __future__ import annotations

import os
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts.readiness.project import IGNORED_DIRS

MARKERS: tuple[str, ...] = ("TODO", "FIXME", "XXX", "HACK")
COUNTED_CONFIDENCE = 0.5
RISKS: tuple[str, ...] = ("blocker", "high", "medium", "low")
_TEXT_LIMIT = 200

_MARKER = (
    r"(?P<kind>TODO|FIXME|XXX|HACK)(?=[\s:(!,;-]|\.(?:\s|$)|$)"
    r"(?:\((?P<tags>[^)]*)\))?[!:.,;\s-]*(?P<text>.*)$"
)
_AT_START = re.compile("^" + _MARKER)
_ANYWHERE = re.compile(r"(?<![\w-])" + _MARKER)
_LOWER_AT_START = re.compile(r"^(?P<kind>todo|fixme|hack)(?:\((?P<tags>[^)]*)\))?\s*:\s*(?P<text>.*)$")
_TAG_SPLIT = re.compile(r"[\s,;/|=]+")


@dataclass(frozen=True)
class ScanSettings:
    """What counts as blocking, interim phrasing and critical."""

    blocker_tags: tuple[str, ...] = ("blocker",)
    phrases: tuple[str, ...] = ("for now", "temporary", "placeholder")
    critical_files: frozenset[str] = frozenset()
    critical_dirs: tuple[str, ...] = ()

    def phrase_pattern(self) -> re.Pattern[str] | None:
        """One case-insensitive whole-word pattern for all phrases (None when there are none)."""
        if not self.phrases:
            return None
        alternatives = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in self.phrases)
        return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)

    def is_critical(self, path: str) -> bool:
        """True when ``path`` is a critical file or lies under a critical directory."""
        if path in self.critical_files:
            return True
        return any(d in ("", ".") or path.startswith(d.rstrip("/") + "/") for d in self.critical_dirs)


@dataclass(frozen=True)
class TodoItem:
    """One finding."""

    file: str
    line: int
    kind: str
    text: str
    confidence: float
    risk: str
    blocker: bool
    critical_path: bool
    critical_module: bool
    tags: tuple[str, ...] = ()
    phrase: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "text": self.text,
            "tags": list(self.tags),
            "phrase": self.phrase,
            "confidence": self.confidence,
            "risk": self.risk,
            "blocker": self.blocker,
            "critical_path": self.critical_path,
            "critical_module": self.critical_module,
        }


def _risk(kind: str, blocker: bool, critical: bool) -> str:
    if blocker:
        return "blocker"
    if kind in ("FIXME", "XXX", "HACK"):
        return "high" if critical else "medium"
    return "medium" if critical else "low"


def classify_comment(
    comment: str, file: str, line: int, settings: ScanSettings, phrase_re: re.Pattern[str] | None
) -> TodoItem | None:
    """Classify one comment token's text (including its ``#``); None when it holds no finding."""
    body = comment.lstrip("#").strip()
    if not body:
        return None
    match = _AT_START.match(body)
    confidence = 0.95
    if match is None:
        match = _ANYWHERE.search(body)
        confidence = 0.7
    if match is None:
        match = _LOWER_AT_START.match(body)
        confidence = 0.6
    critical_module = file in settings.critical_files
    critical = critical_module or settings.is_critical(file)
    if match is not None:
        kind = match.group("kind").upper()
        tags = tuple(t.lower() for t in _TAG_SPLIT.split(match.group("tags") or "") if t)
        blocker = any(tag in settings.blocker_tags for tag in tags)
        text = (match.group("text") or body).strip()[:_TEXT_LIMIT]
        return TodoItem(
            file,
            line,
            kind,
            text,
            confidence,
            _risk(kind, blocker, critical),
            blocker,
            critical,
            critical_module,
            tags,
        )
    phrase = phrase_re.search(body) if phrase_re is not None else None
    if phrase is None:
        return None
    return TodoItem(
        file,
        line,
        "phrase",
        body[:_TEXT_LIMIT],
        0.35,
        _risk("phrase", False, critical),
        False,
        critical,
        critical_module,
        (),
        " ".join(phrase.group(0).lower().split()),
    )


def scan_file(path: Path, relative: str, settings: ScanSettings) -> tuple[list[TodoItem], str | None]:
    """Tokenize one file once; return its findings and an error message if tokenizing stopped early."""
    phrase_re = settings.phrase_pattern()
    items: list[TodoItem] = []
    try:
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                if token.type == tokenize.COMMENT:
                    item = classify_comment(token.string, relative, token.start[0], settings, phrase_re)
                    if item is not None:
                        items.append(item)
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, OSError) as exc:
        return items, f"{relative}: {type(exc).__name__}: {exc}"
    return items, None


def iter_python_files(root: Path, paths: Iterable[str]) -> Iterator[tuple[Path, str]]:
    """Yield ``(absolute, relative)`` for every ``.py`` file under ``paths``, each once, sorted.

    Hidden directories, virtual environments, caches and ``mutants/`` are skipped.
    """
    seen: set[str] = set()
    found: list[tuple[Path, str]] = []
    for entry in paths:
        start = (root / entry).resolve()
        if start.is_file() and start.suffix == ".py":
            candidates = [start]
        elif start.is_dir():
            candidates = []
            for directory, dirnames, filenames in os.walk(start):
                dirnames[:] = [
                    d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS and d != ".venv"
                ]
                candidates += [Path(directory) / f for f in filenames if f.endswith(".py")]
        else:
            continue
        for candidate in candidates:
            try:
                relative = candidate.relative_to(root.resolve()).as_posix()
            except ValueError:
                relative = candidate.as_posix()
            if relative not in seen:
                seen.add(relative)
                found.append((candidate, relative))
    yield from sorted(found, key=lambda pair: pair[1])


@dataclass
class TodoScan:
    """All findings of a scan and how the scan went."""

    items: list[TodoItem] = field(default_factory=list)
    files_scanned: int = 0
    errors: list[str] = field(default_factory=list)
    paths: tuple[str, ...] = ()
    newest_mtime: float = 0.0

    @property
    def counted(self) -> list[TodoItem]:
        """Findings confident enough to count in the score."""
        return [item for item in self.items if item.confidence >= COUNTED_CONFIDENCE]

    @property
    def blockers(self) -> list[TodoItem]:
        """Blocking findings."""
        return [item for item in self.items if item.blocker]

    @property
    def blocker_ratio(self) -> float:
        """Blocking findings over counted findings (0 when nothing is counted)."""
        counted = len(self.counted)
        return len(self.blockers) / counted if counted else 0.0

    def summary(self) -> dict[str, object]:
        """Counts by kind, risk and location."""
        by_kind = {kind: 0 for kind in (*MARKERS, "phrase")}
        by_risk = dict.fromkeys(RISKS, 0)
        for item in self.items:
            by_kind[item.kind] += 1
            by_risk[item.risk] += 1
        return {
            "total": len(self.items),
            "counted": len(self.counted),
            "blockers": len(self.blockers),
            "blocker_ratio": self.blocker_ratio,
            "critical_path": sum(1 for item in self.items if item.critical_path),
            "by_kind": by_kind,
            "by_risk": by_risk,
        }


def scan(root: Path, paths: Iterable[str], settings: ScanSettings) -> TodoScan:
    """Scan every Python file under ``paths`` (relative to ``root``)."""
    path_list = tuple(paths)
    result = TodoScan(paths=path_list)
    for absolute, relative in iter_python_files(root, path_list):
        items, error = scan_file(absolute, relative, settings)
        result.items.extend(items)
        result.files_scanned += 1
        if error is not None:
            result.errors.append(error)
        try:
            result.newest_mtime = max(result.newest_mtime, absolute.stat().st_mtime)
        except OSError as exc:
            result.errors.append(f"{relative}: {exc}")
    return result
