"""Helpers of the readiness gate (``scripts/assess_readiness.py``), one job per module.

- ``junit``: parse a JUnit XML report into per-test outcomes.
- ``triage``: group failing tests by file and failure pattern.
- ``coverage_json``: read coverage.py's JSON report (line and branch counts).
- ``project``: find the assessed project's coverage config and source packages.
- ``config``: load and validate the ``[tool.readiness]`` section.
- ``todos``: find TODO/FIXME/XXX/HACK comments with ``tokenize``.
- ``critical``: health of the configured critical modules and entry points.
- ``mutation``: run mutmut 3 and read its result files.
- ``runner``: run pytest once with JUnit XML and coverage JSON output.
- ``scoring``: component scores, weights, bands and the gate verdict.
- ``compare``: change since a previous JSON report.
- ``report``: assemble the JSON report.
- ``render``: render the Markdown report from the JSON report.
- ``assess``: run the whole assessment.
"""
