"""Recommendations derived from a JSON readiness report, most urgent first."""

from __future__ import annotations

from typing import Any

_LIMIT = 5


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIMIT])
    return shown + (f" (+{len(items) - _LIMIT} more)" if len(items) > _LIMIT else "")


def _tests(tests: dict[str, Any]) -> list[str]:
    out: list[str] = []
    top = tests.get("failures", {}).get("top_categories", [])
    if top:
        first = top[0]
        out.append(
            f"Triage the most common failure first: `{first['category']}` "
            f"({first['count']} test(s) in {_names(first['files'])})."
        )
    counts = tests.get("counts", {})
    if tests.get("executed", 0) == 0:
        out.append(
            "No test ran to a verdict: add tests (or fix collection) before any training or export run."
        )
    if counts.get("skipped", 0) and counts.get("skipped", 0) >= max(1, tests.get("total", 0)) // 4:
        out.append(f"{counts['skipped']} test(s) are skipped: check that skip conditions still hold.")
    return out


def _coverage(coverage: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for row in coverage.get("critical_modules", []):
        if row["status"] != "fail":
            continue
        if not row["measured"]:
            out.append(f"Critical module {row['path']} is not in the coverage data: import and test it.")
            continue
        parts = []
        if row["line_threshold"] is not None and row["line_percent"] < row["line_threshold"]:
            parts.append(f"line {row['line_percent']:.1f}% < {row['line_threshold']:g}%")
        if (
            row["branch_percent"] is not None
            and row["branch_threshold"] is not None
            and row["branch_percent"] < row["branch_threshold"]
        ):
            parts.append(f"branch {row['branch_percent']:.1f}% < {row['branch_threshold']:g}%")
        out.append(f"Raise coverage of critical module {row['path']}: {', '.join(parts)}.")
    uncovered = [
        m["path"] for m in coverage.get("modules", []) if m["line"]["total"] > 0 and m["line"]["covered"] == 0
    ]
    if uncovered:
        out.append(f"{len(uncovered)} module(s) are never executed by the tests: {_names(uncovered)}.")
    line, branch = coverage.get("line", {}).get("percent"), coverage.get("branch", {}).get("percent")
    if line is not None and branch is not None and line - branch >= 15:
        out.append(
            f"Branch coverage ({branch:.1f}%) trails line coverage ({line:.1f}%): "
            "test the untaken sides of conditions."
        )
    return out


def _todos(todos: dict[str, Any]) -> list[str]:
    items = todos.get("items", [])
    blockers = [f"{i['file']}:{i['line']}" for i in items if i["blocker"]]
    out = []
    if blockers:
        out.append(f"Resolve {len(blockers)} blocking TODO(s): {_names(blockers)}.")
    risky = [f"{i['file']}:{i['line']}" for i in items if i["risk"] == "high"]
    if risky:
        out.append(f"Review {len(risky)} FIXME/HACK/XXX marker(s) in critical paths: {_names(risky)}.")
    return out


def _mutation(mutation: dict[str, Any], targets: list[dict[str, Any]]) -> list[str]:
    out = []
    thresholds = {t["path"]: t["thresholds"].get("mutation") for t in targets if t.get("path")}
    for module in mutation.get("modules", []):
        threshold = thresholds.get(module["path"])
        score = module["score"]
        if score is not None and threshold is not None and score < threshold:
            out.append(
                f"Strengthen the tests of {module['path']}: mutation score {score:.1f}% < {threshold:g}% "
                f"({module['undetected']} undetected mutant(s); see `mutmut show <name>`)."
            )
    return out


def recommendations(report: dict[str, Any]) -> list[str]:
    """Concrete next steps for the findings in ``report``."""
    components = report["components"]
    out: list[str] = []
    for failure in report["verdict"]["hard_failures"]:
        out.append(f"Gate blocker ({failure['condition']}): {failure['detail']}.")
    if components["tests"]["status"] == "measured":
        out += _tests(components["tests"])
    if components["coverage"]["status"] == "measured":
        out += _coverage(components["coverage"])
    if components["todos"]["status"] == "measured":
        out += _todos(components["todos"])
    targets = components["critical_paths"].get("targets", [])
    if components["mutation"]["status"] == "measured":
        out += _mutation(components["mutation"], targets)
    if not targets:
        out.append(
            "No critical modules are configured: name them in [tool.readiness.critical_modules] "
            "so their tests, coverage and TODOs gate the run."
        )
    for name in report["weights"]["skipped_components"]:
        reason = components[name]["reason"]
        no_targets = name == "critical_paths" and not targets
        if (name != "mutation" or components[name]["status"] == "error") and not no_targets:
            out.append(f"The {name} component was not scored ({reason}).")
    if not out:
        out.append("Nothing urgent: keep the gate in CI and raise --fail-under as the score improves.")
    return out
