"""A worse project never scores higher: the TODO and coverage scores are monotone (property tests)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.readiness.coverage_json import parse_coverage_json
from scripts.readiness.scoring import coverage_score, todo_score
from scripts.readiness.todos import TodoItem, TodoScan

# a finding: blocking or not, confident enough to count (0.95, 0.7) or not (0.35)
findings = st.lists(st.tuples(st.booleans(), st.sampled_from([0.95, 0.7, 0.35])), max_size=60)


def _scan(spec: list[tuple[bool, float]]) -> TodoScan:
    return TodoScan(
        items=[
            TodoItem("pkg/m.py", n + 1, "TODO", "t", confidence, "low", blocker, False, False)
            for n, (blocker, confidence) in enumerate(spec)
        ]
    )


@settings(max_examples=100, deadline=None)
@given(findings, findings)
def test_more_todos_never_raise_the_todo_score(
    existing: list[tuple[bool, float]], added: list[tuple[bool, float]]
) -> None:
    before, after = todo_score(_scan(existing)), todo_score(_scan(existing + added))
    assert 0.0 <= after <= before <= 100.0


@settings(max_examples=100, deadline=None)
@given(findings, st.data())
def test_making_a_todo_blocking_never_raises_the_todo_score(
    spec: list[tuple[bool, float]], data: st.DataObject
) -> None:
    if not spec:
        return
    index = data.draw(st.integers(0, len(spec) - 1))
    worse = list(spec)
    worse[index] = (True, spec[index][1])
    assert todo_score(_scan(worse)) <= todo_score(_scan(spec))


def test_adding_ordinary_todos_to_a_blocker_lowers_the_score() -> None:
    """The case from issue 16: 1 blocker alone scored 0, 1 blocker + 3 TODOs scored 75."""
    one_blocker = todo_score(_scan([(True, 0.95)]))
    assert todo_score(_scan([(True, 0.95), (False, 0.95), (False, 0.95), (False, 0.95)])) < one_blocker
    assert todo_score(_scan([])) == 100.0
    assert todo_score(_scan([(False, 0.35)])) == 100.0  # low-confidence phrasing does not count


def _coverage(statements: int, covered: int, branches: int, covered_branches: int, branch: bool) -> float:
    summary = {
        "num_statements": statements,
        "covered_lines": covered,
        "num_branches": branches if branch else 0,
        "covered_branches": covered_branches if branch else 0,
    }
    text = json.dumps({"meta": {"branch_coverage": branch}, "files": {}, "totals": summary})
    return coverage_score(parse_coverage_json(text))


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int, int, int]:
    statements = draw(st.integers(0, 500))
    branches = draw(st.integers(0, 200))
    return statements, draw(st.integers(0, statements)), branches, draw(st.integers(0, branches))


@settings(max_examples=150, deadline=None)
@given(counts())
def test_missing_branch_data_never_scores_above_present_branch_data(c: tuple[int, int, int, int]) -> None:
    assert _coverage(*c, branch=False) <= _coverage(*c, branch=True)


@settings(max_examples=150, deadline=None)
@given(counts(), st.integers(0, 50), st.integers(0, 50), st.booleans())
def test_covering_more_never_lowers_the_coverage_score(
    c: tuple[int, int, int, int], more_lines: int, more_branches: int, branch: bool
) -> None:
    statements, covered, branches, covered_branches = c
    better = (
        statements,
        min(statements, covered + more_lines),
        branches,
        min(branches, covered_branches + more_branches),
    )
    assert _coverage(*better, branch=branch) >= _coverage(*c, branch=branch)
