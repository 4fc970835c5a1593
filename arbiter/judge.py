"""Scoring API over a trained judge artifact, and the functions other pipelines call.

    judge = Judge.load("runs/judge/judge")
    judge.score(prompt, response)          -> ScoreVerdict   (score_batch: lists in, list out)
    judge.compare(prompt, a, b)            -> CompareVerdict (compare_batch)
    judge.score_steps(prompt, steps)       -> StepVerdict    (score_steps_batch)
    step_weights(judge, prompt, steps)     -> list[float]    (process supervision weights)
    win_rate(judge, prompts, a, b)         -> dict           (e.g. student vs teacher)

Inputs are ``<bos>`` + prompt + response + ``<eos>``, batched with left padding (results do not depend on
padding or batch composition beyond float rounding). Steps given as a list are scored inside
``<think><step>s1</step><step>s2</step>...`` after the prompt, the format the judge was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from arbiter.data.schema import Winner
from arbiter.judge_training.artifact import JudgeSpec, load_judge
from arbiter.judge_training.encoding import PaddingSide, encode_input, pad_inputs
from arbiter.judge_training.losses import davidson_probabilities
from arbiter.judge_training.model import JudgeModel
from arbiter.verdicts import CompareVerdict, ScoreVerdict, StepVerdict, WinRate
from training.tokenizer import DistilleryTokenizer

STEP_THRESHOLD = 0.5


@dataclass(frozen=True)
class _Raw:
    reward: float
    clauses: list[float] | None
    steps: list[float] | None


# Rewards closer than this, relative to their scale (at least 1), are a tie: the same input scored at two
# batch positions (or by two kernels) differs by float rounding, and that must not decide a comparison.
TIE_REWARD_RTOL = 1e-5


def _winner(p_a: float, p_b: float, p_tie: float, reward_a: float, reward_b: float) -> Winner:
    """The most probable outcome; equal rewards (within float rounding, e.g. identical responses) are a tie."""
    scale = max(1.0, abs(reward_a), abs(reward_b))
    if p_tie >= max(p_a, p_b) or abs(reward_a - reward_b) <= TIE_REWARD_RTOL * scale:
        return "tie"
    return "a" if p_a > p_b else "b"


def steps_response(steps: Sequence[str]) -> str:
    """The response text the judge scores for a list of steps: ``<think><step>s</step>...``."""
    for index, step in enumerate(steps):
        if "<step>" in step or "</step>" in step:
            raise ValueError(f"step {index} contains a step tag; pass the step text only: {step!r}")
    return "<think>" + "".join(f"<step>{step}</step>" for step in steps)


def _same_length(**lists: Sequence[object]) -> int:
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"batched inputs must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


class Judge:
    """A loaded judge: model (eval mode), its spec and tokenizer."""

    def __init__(self, model: JudgeModel, spec: JudgeSpec, tokenizer: DistilleryTokenizer, *,
                 batch_size: int = 32, padding_side: PaddingSide = "left") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.padding_side: PaddingSide = padding_side

    @classmethod
    def load(cls, directory: str | Path, *, batch_size: int = 32, num_threads: int | None = None) -> Judge:
        """Load a judge artifact (every file verified against its manifest). ``num_threads`` sets torch's
        intra-op threads for this process when given."""
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        model, spec, tokenizer = load_judge(directory)
        return cls(model, spec, tokenizer, batch_size=batch_size)

    @property
    def clauses(self) -> tuple[str, ...]:
        return self.spec.clauses

    def _run(self, prompts: Sequence[str], responses: Sequence[str]) -> list[_Raw]:
        """Rewards, clause probabilities and step probabilities (at each response ``</step>``).

        Each distinct (prompt, response) pair is run once and its result shared, so identical inputs get
        identical results by construction (not by hoping two batch positions round alike)."""
        _same_length(prompts=prompts, responses=responses)
        pairs = list(zip(prompts, responses, strict=True))
        unique = list(dict.fromkeys(pairs))
        if len(unique) == len(pairs):
            return self._run_distinct(prompts, responses)
        raws = dict(zip(unique, self._run_distinct([p for p, _ in unique], [r for _, r in unique]), strict=True))
        return [raws[pair] for pair in pairs]

    @torch.no_grad()
    def _run_distinct(self, prompts: Sequence[str], responses: Sequence[str]) -> list[_Raw]:
        """:meth:`_run` without sharing: every row is run, in batches of ``batch_size``."""
        out: list[_Raw] = []
        for start in range(0, len(prompts), self.batch_size):
            encoded = [encode_input(self.tokenizer, p, r, self.spec.max_length)
                       for p, r in zip(prompts[start:start + self.batch_size],
                                       responses[start:start + self.batch_size], strict=True)]
            padded = pad_inputs(encoded, self.tokenizer.pad_id, self.padding_side)
            offsets = padded.offsets
            result = self.model(padded.input_ids, padded.attention_mask, padded.response_mask)
            clause_probs = result.clause_logits.sigmoid().tolist() if result.clause_logits is not None else None
            step_probs = result.step_logits.sigmoid() if result.step_logits is not None else None
            for row, item in enumerate(encoded):
                steps = None
                if step_probs is not None:
                    steps = [float(step_probs[row, int(offsets[row]) + pos]) for pos in item.step_positions]
                out.append(_Raw(float(result.score[row]), None if clause_probs is None else clause_probs[row], steps))
        return out

    def _score_verdict(self, raw: _Raw) -> ScoreVerdict:
        clauses = None if raw.clauses is None else dict(zip(self.clauses, raw.clauses, strict=True))
        return ScoreVerdict(reward=raw.reward, clauses=clauses, steps=raw.steps)

    # ---- scores ---------------------------------------------------------------------------------------
    def score(self, prompt: str, response: str) -> ScoreVerdict:
        """Reward, clause and step probabilities of one response."""
        return self.score_batch([prompt], [response])[0]

    def score_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> list[ScoreVerdict]:
        """:meth:`score` for equal-length lists."""
        return [self._score_verdict(raw) for raw in self._run(prompts, responses)]

    # ---- comparisons ----------------------------------------------------------------------------------
    def compare(self, prompt: str, a: str, b: str) -> CompareVerdict:
        """Which response is better: a, b or tie, with the Davidson probabilities of each outcome."""
        return self.compare_batch([prompt], [a], [b])[0]

    def compare_batch(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]
                      ) -> list[CompareVerdict]:
        """:meth:`compare` for equal-length lists."""
        n = _same_length(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
        raws = self._run([*prompts, *prompts], [*responses_a, *responses_b])
        reward_a = torch.tensor([r.reward for r in raws[:n]])
        reward_b = torch.tensor([r.reward for r in raws[n:]])
        probs = davidson_probabilities(reward_a, reward_b, self.model.tie_log_nu.detach()).tolist()
        return [
            CompareVerdict(winner=_winner(*row, float(ra), float(rb)), p_a=row[0], p_b=row[1], p_tie=row[2],
                           reward_a=float(ra), reward_b=float(rb))
            for row, ra, rb in zip(probs, reward_a, reward_b, strict=True)
        ]

    # ---- steps ----------------------------------------------------------------------------------------
    def score_steps(self, prompt: str, steps: Sequence[str]) -> StepVerdict:
        """Probability that each step is correct given the prompt and the earlier steps."""
        return self.score_steps_batch([prompt], [steps])[0]

    def score_steps_batch(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[StepVerdict]:
        """:meth:`score_steps` for equal-length lists."""
        if not self.spec.step_head:
            raise ValueError("this judge has no step head (judge_config.json: step_head is false)")
        _same_length(prompts=prompts, steps=steps)
        raws = self._run(prompts, [steps_response(chain) for chain in steps])
        verdicts = []
        for raw in raws:
            scores = raw.steps or []
            first = next((i for i, s in enumerate(scores) if s < STEP_THRESHOLD), None)
            verdicts.append(StepVerdict(scores=scores, first_error=first))
        return verdicts


def step_weights(judge: Judge, prompt: str, steps: Sequence[str]) -> list[float]:
    """Process-supervision weights: the judge's probability, in [0, 1], that each step is correct given
    the prompt and the steps before it (one weight per step; ``[]`` for no steps)."""
    if not steps:
        return []
    return list(judge.score_steps(prompt, steps).scores)


def win_rate(judge: Judge, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]
             ) -> dict[str, object]:
    """Judge win-rate of ``responses_a`` against ``responses_b`` (e.g. student vs teacher) as a
    :class:`arbiter.verdicts.WinRate` dict: counts of a/b/tie verdicts, ``win_rate_a = (wins_a + ties/2)/n``
    with a 95% interval, and the mean outcome probabilities."""
    n = _same_length(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
    if n == 0:
        raise ValueError("win_rate needs at least one prompt")
    verdicts = judge.compare_batch(prompts, responses_a, responses_b)
    wins_a = sum(v.winner == "a" for v in verdicts)
    wins_b = sum(v.winner == "b" for v in verdicts)
    ties = n - wins_a - wins_b
    outcomes = [1.0 if v.winner == "a" else 0.0 if v.winner == "b" else 0.5 for v in verdicts]
    rate = sum(outcomes) / n
    spread = math.sqrt(sum((o - rate) ** 2 for o in outcomes) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * spread / math.sqrt(n)
    report = WinRate(
        n=n, wins_a=wins_a, wins_b=wins_b, ties=ties, win_rate_a=rate, win_rate_b=1.0 - rate,
        win_rate_a_ci95=(max(0.0, rate - half), min(1.0, rate + half)),
        mean_p_a=sum(v.p_a for v in verdicts) / n, mean_p_b=sum(v.p_b for v in verdicts) / n,
        mean_p_tie=sum(v.p_tie for v in verdicts) / n,
    )
    return report.model_dump(mode="json")
