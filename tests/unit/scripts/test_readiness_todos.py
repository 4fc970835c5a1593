"""TODO scan: tokenize-based detection, confidence, risk, blockers, critical paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.readiness.todos import (
    ScanSettings,
    TodoItem,
    TodoScan,
    classify_comment,
    iter_python_files,
    scan,
    scan_file,
)

SETTINGS = ScanSettings(
    blocker_tags=("blocker",),
    phrases=("for now", "temporary", "placeholder"),
    critical_files=frozenset({"pkg/train.py"}),
    critical_dirs=("pkg/export",),
)
PHRASES = SETTINGS.phrase_pattern()


def _classify(comment: str, file: str = "pkg/misc.py") -> TodoItem | None:
    return classify_comment(comment, file, 1, SETTINGS, PHRASES)


def _item(comment: str, file: str = "pkg/misc.py") -> TodoItem:
    item = _classify(comment, file)
    assert item is not None, comment
    return item


def test_marker_at_start_is_high_confidence() -> None:
    item = _classify("# TODO: cache the tokenizer")
    assert item is not None
    assert (item.kind, item.text, item.confidence, item.risk) == ("TODO", "cache the tokenizer", 0.95, "low")


def test_blocker_tag_makes_a_blocker() -> None:
    item = _classify("# FIXME(alice, blocker): NaN after step 100")
    assert item is not None
    assert item.blocker and item.risk == "blocker"
    assert item.tags == ("alice", "blocker")
    assert item.text == "NaN after step 100"
    owned = _item("# TODO(bob): tidy up")
    assert owned.tags == ("bob",) and not owned.blocker and owned.risk == "low"


def test_marker_later_in_comment_and_lower_case() -> None:
    later = _classify("# see XXX below")
    assert later is not None and later.kind == "XXX" and later.confidence == 0.7
    lower = _classify("# todo: lower case")
    assert lower is not None and lower.kind == "TODO" and lower.confidence == 0.6


def test_words_containing_markers_are_not_markers() -> None:
    assert _classify("# TODOS are tracked in the issue tracker") is None
    assert _classify("# the HACKER news link") is None
    assert _classify("# plain comment") is None
    assert _classify("# details in TODO.md and FIXME_NOTES") is None
    assert _item("# fix this HACK. Soon").kind == "HACK"
    assert _classify("#") is None


def test_phrasing_is_low_confidence() -> None:
    assert _classify("# the format nowadays") is None
    assert _classify("# temporary_dir is a name, not phrasing") is None
    item = _classify("# use a fixed seed For   Now")
    assert item is not None and item.kind == "phrase" and item.phrase == "for now"
    assert item.confidence == 0.35 and item.risk == "low"


def test_risk_depends_on_critical_path() -> None:
    assert _item("# HACK: skip", "pkg/train.py").risk == "high"
    assert _item("# HACK: skip", "pkg/misc.py").risk == "medium"
    todo = _classify("# TODO: later", "pkg/export/onnx.py")
    assert todo is not None and todo.risk == "medium" and todo.critical_path and not todo.critical_module
    phrase = _classify("# placeholder value", "pkg/train.py")
    assert phrase is not None and phrase.critical_module and phrase.risk == "medium"


def test_is_critical_with_root_dir() -> None:
    assert ScanSettings(critical_dirs=(".",)).is_critical("anything.py")
    assert not ScanSettings().is_critical("anything.py")
    assert ScanSettings(phrases=()).phrase_pattern() is None


SOURCE = '''"""Module docstring mentioning TODO: not a comment."""
# TODO(blocker): fix the loss scaling
x = "# FIXME inside a string"  # HACK: real comment after code
def f():
    """TODO in a docstring."""
    return 1  # temporary workaround
'''


def test_scan_file_reads_only_comment_tokens(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    items, error = scan_file(path, "pkg/m.py", SETTINGS)
    assert error is None
    assert [(i.line, i.kind) for i in items] == [(2, "TODO"), (3, "HACK"), (6, "phrase")]
    assert items[0].blocker


def test_scan_file_reports_tokenize_errors_but_keeps_earlier_findings(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("# TODO: first\nx = (\n")
    items, error = scan_file(path, "broken.py", SETTINGS)
    assert [i.line for i in items] == [1]
    assert error is not None and error.startswith("broken.py: ")


def test_scan_walks_sources_once_and_summarizes(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / ".hidden").mkdir()
    (tmp_path / "pkg" / "train.py").write_text(SOURCE)
    (tmp_path / "pkg" / "other.py").write_text("# TODO: one\n# XXX: two\n")
    (tmp_path / "pkg" / "__pycache__" / "c.py").write_text("# TODO: cached\n")
    (tmp_path / "pkg" / ".hidden" / "h.py").write_text("# TODO: hidden\n")
    (tmp_path / "pkg" / "notes.txt").write_text("# TODO: not python\n")
    result = scan(tmp_path, ["pkg", "pkg/train.py", "missing"], SETTINGS)
    assert result.files_scanned == 2
    assert result.errors == []
    assert result.newest_mtime > 0
    summary = result.summary()
    assert summary["total"] == 5
    assert summary["counted"] == 4
    assert summary["blockers"] == 1
    assert summary["blocker_ratio"] == 0.25
    assert summary["by_kind"] == {"TODO": 2, "FIXME": 0, "XXX": 1, "HACK": 1, "phrase": 1}
    assert summary["by_risk"] == {"blocker": 1, "high": 1, "medium": 2, "low": 1}
    assert summary["critical_path"] == 3


def test_empty_scan_has_zero_ratio() -> None:
    assert TodoScan().blocker_ratio == 0.0


def test_iter_python_files_is_sorted_and_unique(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text("")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.py").write_text("")
    found = [rel for _, rel in iter_python_files(tmp_path, ["b.py", ".", "a"])]
    assert found == ["a/z.py", "b.py"]


@pytest.mark.parametrize("comment", ["# TODO", "# TODO:", "# TODO(bob)"])
def test_bare_markers_keep_the_comment_as_text(comment: str) -> None:
    item = _classify(comment)
    assert item is not None and item.text == comment.lstrip("# ")
