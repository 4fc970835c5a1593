"""The human summary's hints: shown only for a failed fp16 tolerance, and only those that apply."""

from __future__ import annotations

from conversion.coreml_report import Checks, ConversionStatus, CoreMLReport, hints, summary

TOLERANCE_ERROR = "prefill_rel_error 0.00346 exceeds the tolerance 0.003"


def _report(errors: list[str], *, floor: float | None = 3.01e-3, **options: object) -> CoreMLReport:
    settings = {"precision": "fp16", "attention": "split", "ane": True, "target": "iOS18", **options}
    checks = Checks(prefill_rel_error=3.46e-3, prefill_tolerance=3e-3, pytorch_fp16_rel_error=floor)
    exceeded = ["prefill_rel_error"] if TOLERANCE_ERROR in errors else []
    return CoreMLReport(model="m", target=str(settings["target"]), options=settings, checks=checks, errors=errors,
                        exceeded=exceeded)


def test_a_failed_tolerance_gets_both_hints_when_both_apply() -> None:
    found = hints(_report([TOLERANCE_ERROR]))
    assert len(found) == 2
    assert "fp16 floor" in found[0] and "--precision fp32" in found[0]
    assert "--attention fused" in found[1]
    assert "hint: " in summary(_report([TOLERANCE_ERROR]))


def test_hints_only_for_what_applies() -> None:
    assert hints(_report([])) == []  # passed
    assert hints(_report(["greedy tokens diverge from the reference beyond a near tie"])) == []
    assert hints(_report([TOLERANCE_ERROR], precision="fp32")) == []
    below_floor = hints(_report([TOLERANCE_ERROR], floor=1e-3))
    assert len(below_floor) == 1 and "--attention fused" in below_floor[0]
    assert hints(_report([TOLERANCE_ERROR], floor=1e-3, attention="fused")) == []
    assert hints(_report([TOLERANCE_ERROR], floor=1e-3, target="iOS17")) == []


def test_settle_sets_the_status_from_the_failures() -> None:
    report = _report([])
    report.settle(other_failures=False)
    assert report.passed and report.status == ConversionStatus.PASSED
    report = _report([TOLERANCE_ERROR])
    report.settle(other_failures=False)
    assert not report.passed and report.status == ConversionStatus.TOLERANCE_EXCEEDED
    report.settle(other_failures=True)
    assert report.status == ConversionStatus.CHECKS_FAILED
    report = _report(["greedy tokens differ from the reference"])
    report.settle(other_failures=False)  # a failure with no measurement over its tolerance
    assert report.status == ConversionStatus.CHECKS_FAILED
    report.error_type = "ArtifactError"
    report.settle(other_failures=False)
    assert report.status == ConversionStatus.ERROR
