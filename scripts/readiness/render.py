"""Render the Markdown readiness report from the JSON report."""

from __future__ import annotations

from typing import Any

from scripts.readiness.config import COMPONENTS

_MODULE_ROWS = 40
_TODO_ROWS = 40
_CATEGORY_ROWS = 10


def _pc(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _summary(report: dict[str, Any]) -> list[str]:
    verdict = report["verdict"]
    gate = "PASSED" if verdict["passed"] else "FAILED"
    lines = [
        f"# Readiness report: {report['project']['name']}",
        "",
        f"- **Score: {report['score']:.1f}/100 ({report['band']})**",
        f"- **Gate: {gate}** (exit code {verdict['exit_code']})",
        f"- Generated: {report['generated_at']}",
        f"- Project: `{report['project']['root']}`",
    ]
    tests = report["components"]["tests"]
    if tests["status"] == "measured":
        c = tests["counts"]
        lines.append(
            f"- Tests: {c['passed']} passed, {c['failed']} failed, {c['errored']} errored, "
            f"{c['skipped']} skipped, {c['xfailed']} xfailed, {c['xpassed']} xpassed"
        )
    coverage = report["components"]["coverage"]
    if coverage["status"] == "measured":
        lines.append(
            f"- Coverage: line {_pc(coverage['line']['percent'])}, branch {_pc(coverage['branch']['percent'])}"
        )
    todos = report["components"]["todos"]
    if todos["status"] == "measured":
        s = todos["summary"]
        lines.append(
            f"- TODOs: {s['total']} found, {s['blockers']} blocking, {s['critical_path']} in critical paths"
        )
    inputs = report["inputs"]
    if inputs["pytest_command"]:
        lines.append(
            f"- Test run: pytest exit code {inputs['pytest_exit_code']} in {report['timings']['pytest_s']:.1f} s "
            f"(log: `{inputs['pytest_log']}`)"
        )
    elif inputs["junit"] or inputs["coverage_json"]:
        reused = ", ".join(f"`{p}`" for p in (inputs["junit"], inputs["coverage_json"]) if p)
        lines.append(f"- Reports reused (pytest not run): {reused}")
    for warning in report["warnings"]:
        lines.append(f"- Warning: {warning}")
    return lines + [""]


def _breakdown(report: dict[str, Any]) -> list[str]:
    rows = []
    for name in COMPONENTS:
        c = report["components"][name]
        contribution = None if c["score"] is None else c["score"] * c["effective_weight"]
        rows.append(
            [
                name,
                c["status"],
                _num(c["score"]),
                f"{c['weight']:g}",
                f"{c['effective_weight']:.3f}",
                _num(contribution),
                c["reason"],
            ]
        )
    lines = ["## Score breakdown", ""]
    lines += _table(["component", "status", "score", "weight", "effective weight", "points", "note"], rows)
    weights = report["weights"]
    if weights["renormalized"]:
        lines.append(
            f"Not measured: {', '.join(weights['skipped_components'])}. "
            "The remaining weights were renormalized to sum to 1."
        )
        lines.append("")
    return lines


def _comparison(comparison: dict[str, Any] | None) -> list[str]:
    if not comparison:
        return []
    score = comparison["score"]
    lines = [
        "## Change since the last run",
        "",
        f"Compared with `{comparison['previous_report']}` ({comparison['previous_generated_at']}).",
        "",
    ]
    rows = [["score", _num(score["before"]), _num(score["after"]), _delta(score["delta"])]]
    rows.append(["band", comparison["band"]["before"], comparison["band"]["after"], ""])
    gate = comparison["gate_passed"]
    rows.append(["gate passed", gate["before"], gate["after"], ""])
    for name, entry in comparison["components"].items():
        rows.append([f"{name} score", _num(entry["before"]), _num(entry["after"]), _delta(entry["delta"])])
    for kind, entry in comparison["coverage"].items():
        rows.append([f"{kind} coverage", _pc(entry["before"]), _pc(entry["after"]), _delta(entry["delta"])])
    for outcome, entry in comparison["tests"].items():
        rows.append([f"tests {outcome}", entry["before"], entry["after"], _delta(entry["delta"])])
    for key, entry in comparison["todos"].items():
        rows.append([f"TODOs {key}", entry["before"], entry["after"], _delta(entry["delta"])])
    lines += _table(["measure", "before", "after", "change"], rows)
    for title, key in (
        ("Newly failing", "newly_failing_tests"),
        ("No longer failing", "no_longer_failing_tests"),
    ):
        if comparison[key]:
            lines += [f"{title}:", ""] + [f"- `{t}`" for t in comparison[key]] + [""]
    return lines


def _delta(value: Any) -> str:
    return "n/a" if value is None else f"{value:+g}"


def _tests(tests: dict[str, Any]) -> list[str]:
    lines = ["## Tests", ""]
    if tests["status"] != "measured":
        return lines + [f"Not measured: {tests['reason']}", ""]
    c = tests["counts"]
    lines += _table(
        ["passed", "failed", "errored", "skipped", "xfailed", "xpassed", "pass rate"],
        [
            [
                c["passed"],
                c["failed"],
                c["errored"],
                c["skipped"],
                c["xfailed"],
                c["xpassed"],
                _pc(tests["pass_rate"]),
            ]
        ],
    )
    if tests["teardown_errors"]:
        lines += [
            f"{tests['teardown_errors']} failed test(s) also errored in teardown (counted once, as failed).",
            "",
        ]
    top = tests["failures"]["top_categories"]
    if not top:
        return lines + ["No failing tests.", ""]
    lines += ["### Top failure categories", ""]
    lines += _table(
        ["count", "category", "files"],
        [[g["count"], f"`{g['category']}`", ", ".join(g["files"])] for g in top[:_CATEGORY_ROWS]],
    )
    lines += ["### Failures by file", ""]
    for file, groups in tests["failures"]["by_file"].items():
        lines.append(f"- `{file}`")
        for group in groups:
            lines.append(
                f"  - {group['count']} x `{group['category']}`: "
                + ", ".join(f"`{t.split('::', 1)[-1]}`" for t in group["tests"][:_CATEGORY_ROWS])
            )
    return lines + [""]


def _coverage(coverage: dict[str, Any]) -> list[str]:
    lines = ["## Coverage", ""]
    if coverage["status"] != "measured":
        return lines + [f"Not measured: {coverage['reason']}", ""]
    line, branch = coverage["line"], coverage["branch"]
    lines += _table(
        ["measure", "covered", "total", "percent"],
        [
            ["lines", line["covered"], line["total"], _pc(line["percent"])],
            ["branches", _num_or(branch["covered"]), _num_or(branch["total"]), _pc(branch["percent"])],
            ["combined (coverage.py's percent_covered)", "", "", _pc(coverage["combined_percent"])],
        ],
    )
    if coverage["critical_modules"]:
        lines += ["### Critical modules", ""]
        lines += _table(
            ["module", "line", "line threshold", "branch", "branch threshold", "status", "missing lines"],
            [
                [
                    r["path"],
                    _pc(r["line_percent"]),
                    _threshold(r["line_threshold"]),
                    _pc(r["branch_percent"]),
                    _threshold(r["branch_threshold"]),
                    r["status"] if r["measured"] else "not measured: fail",
                    line_ranges(r["missing_lines"]),
                ]
                for r in coverage["critical_modules"]
            ],
        )
    modules = sorted(coverage["modules"], key=lambda m: (m["line"]["percent"], m["path"]))
    title = "### Modules (lowest line coverage first"
    title += f", {_MODULE_ROWS} of {len(modules)} shown)" if len(modules) > _MODULE_ROWS else ")"
    lines += [title, ""]
    lines += _table(
        ["module", "statements", "line", "branches", "branch", "critical"],
        [
            [
                m["path"],
                m["line"]["total"],
                _pc(m["line"]["percent"]),
                _num_or(m["branch"]["total"]),
                _pc(m["branch"]["percent"]),
                "yes" if m["critical"] else "",
            ]
            for m in modules[:_MODULE_ROWS]
        ],
    )
    return lines


def line_ranges(lines: list[int], limit: int = 12) -> str:
    """Compact line list: ``[1, 2, 3, 7]`` -> ``1-3, 7`` (at most ``limit`` ranges)."""
    ranges: list[str] = []
    start = previous = None
    for line in sorted(lines):
        if previous is not None and line == previous + 1:
            previous = line
            continue
        if start is not None:
            ranges.append(f"{start}-{previous}" if previous != start else str(start))
        start = previous = line
    if start is not None:
        ranges.append(f"{start}-{previous}" if previous != start else str(start))
    shown = ", ".join(ranges[:limit])
    return (shown + f", ... ({len(ranges) - limit} more)") if len(ranges) > limit else (shown or "-")


def _num_or(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _threshold(value: Any) -> str:
    return "-" if value is None else f"{value:g}%"


def _critical(critical: dict[str, Any]) -> list[str]:
    lines = ["## Critical paths", ""]
    targets = critical.get("targets", [])
    if critical["status"] != "measured" and not targets:
        return lines + [f"Not measured: {critical['reason']}", ""]
    rows = []
    for t in targets:
        failing = [c for c in t["checks"] if c["status"] == "fail"]
        problems = "; ".join(f"{c['name']}: {c['detail']}" for c in failing) or "-"
        rows.append([t["name"], t["kind"].replace("_", " "), t["status"], problems])
    lines += _table(["target", "kind", "status", "failing checks"], rows)
    for t in targets:
        if t["failing_tests"]:
            lines += [f"Failing tests touching `{t['name']}`:", ""]
            lines += [f"- `{f['test']}` ({f['outcome']}, via {f['via']})" for f in t["failing_tests"]] + [""]
    return lines


def _todos(todos: dict[str, Any]) -> list[str]:
    lines = ["## TODOs", ""]
    if todos["status"] != "measured":
        return lines + [f"Not measured: {todos['reason']}", ""]
    s = todos["summary"]
    lines.append(
        f"{s['total']} finding(s) in {todos['files_scanned']} file(s); {s['counted']} counted "
        f"(confidence >= 0.5), {s['blockers']} blocking (ratio {s['blocker_ratio']:.2f})."
    )
    lines.append("")
    lines += _table(["risk", *s["by_risk"].keys()], [["count", *s["by_risk"].values()]])
    items = todos["items"]
    sections = (
        ("### Blockers", [i for i in items if i["blocker"]]),
        ("### In critical paths", [i for i in items if i["critical_path"] and not i["blocker"]]),
        ("### Elsewhere", [i for i in items if not i["critical_path"] and not i["blocker"]]),
    )
    for title, chosen in sections:
        if not chosen:
            continue
        suffix = f" ({_TODO_ROWS} of {len(chosen)} shown)" if len(chosen) > _TODO_ROWS else ""
        lines += [title + suffix, ""]
        lines += _table(
            ["location", "kind", "risk", "confidence", "text"],
            [
                [f"{i['file']}:{i['line']}", i["kind"], i["risk"], f"{i['confidence']:.2f}", i["text"]]
                for i in chosen[:_TODO_ROWS]
            ],
        )
    for error in todos["errors"]:
        lines.append(f"- Could not fully tokenize {error}")
    return lines + ([""] if todos["errors"] else [])


def _mutation(mutation: dict[str, Any]) -> list[str]:
    if mutation["status"] == "skipped":
        return []
    lines = ["## Mutation testing", ""]
    if mutation["status"] == "error":
        lines += [f"**Error:** {mutation['reason']}", ""]
    modules = mutation.get("modules", [])
    if modules:
        lines += _table(
            ["module", "mutants", "checked", "detected", "undetected", "not checked", "score"],
            [
                [
                    m["path"],
                    m["total"],
                    m["checked"],
                    m["detected"],
                    m["undetected"],
                    m["counts"]["not checked"],
                    _pc(m["score"]),
                ]
                for m in modules
            ],
        )
    if mutation.get("budget_exhausted"):
        lines += [
            f"The time budget ({mutation['budget_s']:g} s) ran out; unchecked mutants are not scored.",
            "",
        ]
    return lines


def _list_section(title: str, items: list[str]) -> list[str]:
    return [title, ""] + [f"- {item}" for item in items] + [""]


def render_markdown(report: dict[str, Any]) -> str:
    """The full Markdown report."""
    components = report["components"]
    verdict = report["verdict"]
    lines = _summary(report)
    lines += _breakdown(report)
    lines += _comparison(report.get("comparison"))
    lines += _tests(components["tests"])
    lines += _coverage(components["coverage"])
    lines += _critical(components["critical_paths"])
    lines += _todos(components["todos"])
    lines += _mutation(components["mutation"])
    lines += _list_section("## Recommendations", report["recommendations"])
    lines += _list_section(
        f"## Verdict: {'PASSED' if verdict['passed'] else 'FAILED'} ({report['band']})", verdict["reasons"]
    )
    return "\n".join(lines).rstrip() + "\n"
