"""Completion markup shared by the bundled tasks: writing and tolerantly reading tagged spans.

A reasoning completion looks like
``<think><step>3*2=6</step><step>7+6=13</step></think><answer>13</answer>``; without reasoning it is
just ``<answer>13</answer>``. The readers here never raise on model output: garbage yields no steps and
no answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
STEP_OPEN, STEP_CLOSE = "<step>", "</step>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
EOS, PAD = "<eos>", "<pad>"

# Innermost <step>...</step>: the content may not itself contain a step tag.
_STEP_RE = re.compile(r"<step>((?:(?!<step>|</step>).)*)</step>", re.DOTALL)


def extract_tagged(text: str, open_tag: str, close_tag: str) -> str | None:
    """Return the text after the first ``open_tag``, up to ``close_tag``.

    When ``close_tag`` is missing (generation stopped early) the span runs to the first ``<eos>`` or
    ``<pad>``, or to the end of ``text``. Returns ``None`` when ``open_tag`` does not occur.
    """
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    ends = [pos for tag in (close_tag, EOS, PAD) if (pos := text.find(tag, start)) >= 0]
    return text[start : min(ends)] if ends else text[start:]


def format_completion(steps: Sequence[str], answer: str, with_steps: bool = True) -> str:
    """Render ``steps`` and ``answer`` as a completion.

    ``with_steps=False`` drops the reasoning and gives ``<answer>...</answer>`` only (for a no-CoT
    student).
    """
    answer_part = f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if not with_steps:
        return answer_part
    body = "".join(f"{STEP_OPEN}{step}{STEP_CLOSE}" for step in steps)
    return f"{THINK_OPEN}{body}{THINK_CLOSE}{answer_part}"


def parse_completion(text: str) -> tuple[list[str], str | None]:
    """Read ``(steps, answer)`` back from a (possibly malformed) completion.

    Steps are the complete ``<step>...</step>`` spans before the first ``<answer>`` tag, stripped of
    surrounding whitespace; the answer is the stripped text of the first ``<answer>`` span (see
    :func:`extract_tagged`), or ``None`` when there is no ``<answer>`` tag.
    """
    answer_at = text.find(ANSWER_OPEN)
    reasoning = text if answer_at < 0 else text[:answer_at]
    steps = [match.strip() for match in _STEP_RE.findall(reasoning)]
    answer = extract_tagged(text, ANSWER_OPEN, ANSWER_CLOSE)
    return steps, None if answer is None else answer.strip()
