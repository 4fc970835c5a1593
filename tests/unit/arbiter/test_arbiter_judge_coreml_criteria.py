"""The judge's Core ML verdict uses the student's rules (conversion.criteria): relative rewrite errors and
fp16 program errors judged against PyTorch's own fp16 error of each output."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter import judge_coreml
from arbiter.judge_coreml import JudgeCoreMLOptions, judge_failures
from conversion import criteria


def _checks(rewrite_abs: float, rewrite_rel: float, program_rel: float, floor: float | None) -> dict[str, Any]:
    return {"rewrite_max_abs_error": {"score": rewrite_abs}, "rewrite_rel_error": {"score": rewrite_rel},
            "program_max_abs_error": {"score": 0.01}, "program_rel_error": {"score": program_rel},
            "pytorch_fp16_rel_error": None if floor is None else {"score": floor},
            "tolerance_used": {"score": 0.5}, "decision_flips": []}


def test_rewrite_is_judged_relative_to_the_output_scale() -> None:
    """A 3e-4 abs rewrite error on outputs near 40 (relative 7.5e-6) failed the old absolute 1e-4 rule."""
    options = JudgeCoreMLOptions()
    errors, _ = judge_failures(_checks(3e-4, 7.5e-6, 1e-3, 1e-3), options)
    assert errors == []
    errors, _ = judge_failures(_checks(3e-4, 2e-5, 1e-3, 1e-3), options)
    assert errors == ["rewrite score 2e-05 exceeds the tolerance 1e-05"]
    strict = JudgeCoreMLOptions(rewrite_atol=1e-4)  # an absolute bound only when asked
    assert any("max abs" in e for e in judge_failures(_checks(3e-4, 7.5e-6, 1e-3, 1e-3), strict)[0])


@pytest.mark.parametrize(("program", "passed"), [(5e-3, True), (7e-3, False)])
def test_fp16_program_against_pytorch_fp16_floor(program: float, passed: bool) -> None:
    errors, tolerances = judge_failures(_checks(0.0, 0.0, program, 4e-3), JudgeCoreMLOptions())
    assert tolerances == {"score": pytest.approx(6e-3)}
    assert (errors == []) is passed
    fp32 = JudgeCoreMLOptions(precision="fp32")
    assert judge_failures(_checks(0.0, 0.0, 2e-4, None), fp32)[0] == ["program score rel error 0.0002 exceeds "
                                                                       "the tolerance 0.0001"]


def test_the_judge_calls_the_shared_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a copy: moving the shared floor moves the judge's tolerance."""
    monkeypatch.setattr(criteria, "FP16_REL_FLOOR", 1e-2)
    assert judge_failures(_checks(0.0, 0.0, 8e-3, 1e-3), JudgeCoreMLOptions())[0] == []
    assert judge_coreml.fp16_tolerance is criteria.fp16_tolerance


def test_elementwise_bound_and_flips_still_fail() -> None:
    checks = _checks(0.0, 0.0, 1e-3, 1e-3)
    checks["tolerance_used"] = {"score": 1.5}
    checks["decision_flips"] = ["pair 0: preference flipped"]
    errors, _ = judge_failures(checks, JudgeCoreMLOptions())
    assert len(errors) == 2 and errors[-1] == "pair 0: preference flipped"
