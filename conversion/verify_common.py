"""Checks shared by the ONNX and torch.export exporters.

An exported backend is seen through a :data:`StepFn`: one forward pass with a KV cache over numpy arrays,
``step(input_ids (B, T), attention_mask (B, P+T), past) -> (logits (B, T, V), present)`` where ``past`` and
``present`` are flat lists ``[k0, v0, k1, v1, ...]`` of (B, n_kv, P(+T), head_dim) arrays and ``past`` is
None for a prefill. Everything here compares such a backend with the eager PyTorch student:
fixed and random batches (with left padding), prefill then cached chunk and decode steps fed back
present -> past, and greedy generation against :meth:`training.model.Student.generate`. It also resolves
the check prompts (tokenizer, prompts file) and guards and fills the output directory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from conversion.criteria import FP32_REL_TOLERANCE, fp32_verdict, relative_error
from training.config_base import FrozenStrictModel
from training.generation import left_pad
from training.model import Student
from training.tokenizer import TOKENIZER_FILE, DistilleryTokenizer


class ExportSourceConfig(FrozenStrictModel):
    """Options every exporter shares: the student to read, where to write, and how to verify."""

    student_dir: Path = Field(description="student artifact directory (manifest verified)")
    out: Path = Field(description="output directory, written atomically")
    max_new_tokens: int = Field(16, ge=1, le=1024, description="greedy tokens generated per check prompt")
    prompts: Path | None = Field(None, description="file with one check prompt per line (null: the built-in prompts)")
    rtol: float = Field(FP32_REL_TOLERANCE, gt=0,
                        description="relative tolerance max|got - ref| / max|ref| of logits and cache tensors")
    atol: float | None = Field(None, gt=0, description="optional absolute bound on max|got - ref| as well")
    decode_steps: int = Field(4, ge=1, le=256, description="cached decode steps checked after the prefill")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch's default)")

    @field_validator("student_dir")
    @classmethod
    def _student_is_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"prompts file {value} does not exist")
        return value

StepFn = Callable[[np.ndarray, np.ndarray, list[np.ndarray] | None], tuple[np.ndarray, list[np.ndarray]]]

COMPANION_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
REPORT_FILE = "report.json"
DEFAULT_PROMPTS = (
    "Q: 7+3*2-4=?\n",
    "Set a timer for 5 minutes",
    "Will it rain today?",
    "The quick brown fox jumps over",
)


# ---- the eager reference ----------------------------------------------------------------------------
def eager_step(student: Student) -> StepFn:
    """The eager student as a :data:`StepFn` (position ids derived from the mask, as in generation)."""

    def step(
        input_ids: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray] | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        cache = None
        if past is not None:
            tensors = [torch.from_numpy(p) for p in past]
            cache = [(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]
        with torch.no_grad():
            out = student.run(
                torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                past_key_values=cache, use_cache=True,
            )
        assert out.logits is not None and out.past_key_values is not None
        return out.logits.numpy(), [t.numpy() for pair in out.past_key_values for t in pair]

    return step


# ---- reference inputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptBatch:
    """A named prefill input: input_ids (B, T) int64 and attention_mask (B, T) int64 (0 = left pad)."""

    name: str
    input_ids: np.ndarray
    attention_mask: np.ndarray


def reference_batches(vocab_size: int, pad_id: int, seed: int = 0) -> list[PromptBatch]:
    """Fixed and random prefill batches: batch 1 (12 tokens and a single token), batch 3 left-padded to
    lengths 10/7/4, batch 2 of 16 random tokens."""
    rng = np.random.default_rng(seed)
    fixed = (np.arange(12, dtype=np.int64) * 7 + 3) % vocab_size
    lengths = (10, 7, 4)
    padded = np.full((3, 10), pad_id, dtype=np.int64)
    mask = np.zeros((3, 10), dtype=np.int64)
    for row, length in enumerate(lengths):
        padded[row, 10 - length:] = rng.integers(0, vocab_size, length)
        mask[row, 10 - length:] = 1
    return [
        PromptBatch("fixed_b1_t12", fixed[None, :], np.ones((1, 12), dtype=np.int64)),
        PromptBatch("fixed_b1_t1", fixed[None, :1].copy(), np.ones((1, 1), dtype=np.int64)),
        PromptBatch("random_b3_t10_left_padded", padded, mask),
        PromptBatch("random_b2_t16", rng.integers(0, vocab_size, (2, 16)).astype(np.int64),
                    np.ones((2, 16), dtype=np.int64)),
    ]


# ---- error statistics -------------------------------------------------------------------------------
@dataclass
class ErrorStats:
    """Running comparison of a candidate against the reference.

    max_rel_error is ``max|got - ref| / max|ref|`` per compared tensor (relative to the largest reference
    magnitude, so near-zero logits do not dominate; :func:`conversion.criteria.relative_error`), the
    largest over all compared tensors; max_rel_error_present the same for each present (cache) tensor.
    Argmax agreement counts real (unpadded) positions.
    """

    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    max_abs_error_present: float = 0.0
    max_rel_error_present: float = 0.0
    argmax_agree: int = 0
    argmax_total: int = 0
    cached_steps: int = 0

    def update(self, ref: np.ndarray, got: np.ndarray, real: np.ndarray,
               ref_present: Sequence[np.ndarray], got_present: Sequence[np.ndarray]) -> None:
        """ref/got: logits (B, T, V); real: (B, T) bool; presents: flat lists of (B, n_kv, P+T, D)."""
        if ref.shape != got.shape:
            raise ValueError(f"logits shape {got.shape} differs from the reference {ref.shape}")
        diff = float(np.abs(got.astype(np.float64) - ref).max())
        self.max_abs_error = max(self.max_abs_error, diff)
        self.max_rel_error = max(self.max_rel_error, relative_error(got, ref))
        agree = ref.argmax(-1) == got.argmax(-1)
        self.argmax_agree += int(agree[real].sum())
        self.argmax_total += int(real.sum())
        if len(ref_present) != len(got_present):
            raise ValueError(f"{len(got_present)} present tensors, the reference has {len(ref_present)}")
        for r, g in zip(ref_present, got_present, strict=True):
            if r.shape != g.shape:
                raise ValueError(f"present shape {g.shape} differs from the reference {r.shape}")
            self.max_abs_error_present = max(
                self.max_abs_error_present, float(np.abs(g.astype(np.float64) - r).max())
            )
            self.max_rel_error_present = max(self.max_rel_error_present, relative_error(g, r))

    @property
    def argmax_agreement(self) -> float:
        """Fraction of real positions whose argmax token matches the reference."""
        return self.argmax_agree / max(self.argmax_total, 1)


def compare_trajectory(reference: StepFn, candidate: StepFn, batch: PromptBatch, stats: ErrorStats, *,
                       decode_steps: int, chunk: int, rng: np.random.Generator, vocab_size: int) -> None:
    """Prefill ``batch`` on both sides, then one cached chunk of ``chunk`` tokens (skipped when 0) and
    ``decode_steps`` single-token steps; each side feeds back its own present as the next past."""
    ids, mask = batch.input_ids, batch.attention_mask
    ref_logits, ref_cache = reference(ids, mask, None)
    got_logits, got_cache = candidate(ids, mask, None)
    stats.update(ref_logits, got_logits, mask.astype(bool), ref_cache, got_cache)
    lengths = ([chunk] if chunk > 0 else []) + [1] * decode_steps
    for length in lengths:
        new = rng.integers(0, vocab_size, (ids.shape[0], length)).astype(np.int64)
        mask = np.concatenate([mask, np.ones_like(new)], axis=1)
        ref_logits, ref_cache = reference(new, mask, ref_cache)
        got_logits, got_cache = candidate(new, mask, got_cache)
        stats.update(ref_logits, got_logits, np.ones(new.shape, dtype=bool), ref_cache, got_cache)
        stats.cached_steps += 1


def measure_errors(student: Student, candidate: StepFn, *, decode_steps: int = 4, chunk: int = 3,
                   seed: int = 0) -> tuple[ErrorStats, list[str]]:
    """Compare ``candidate`` with the eager student on :func:`reference_batches`; returns the statistics
    and the names of the batches checked."""
    cfg = student.config
    stats = ErrorStats()
    rng = np.random.default_rng(seed + 1)
    batches = reference_batches(cfg.vocab_size, cfg.pad_token_id, seed)
    reference = eager_step(student)
    for batch in batches:
        compare_trajectory(reference, candidate, batch, stats, decode_steps=decode_steps, chunk=chunk,
                           rng=rng, vocab_size=cfg.vocab_size)
    return stats, [b.name for b in batches]


# ---- greedy generation ------------------------------------------------------------------------------
def greedy_generate(step: StepFn, input_ids: np.ndarray, attention_mask: np.ndarray, *, max_new_tokens: int,
                    eos_token_id: int, pad_token_id: int) -> np.ndarray:
    """Greedy decoding with a KV cache through ``step``, token for token the loop of
    :func:`training.generation.generate`: left-padded prompts (B, T) -> (B, T + n), n <= max_new_tokens;
    a row that emitted eos continues with pad (mask 0); stops once every row has finished."""
    tokens = input_ids.astype(np.int64)
    mask = attention_mask.astype(np.int64)
    finished = np.zeros(tokens.shape[0], dtype=bool)
    cache: list[np.ndarray] | None = None
    step_input = tokens
    for _ in range(max_new_tokens):
        logits, cache = step(step_input, mask, cache)
        chosen = logits[:, -1].argmax(-1).astype(np.int64)
        chosen = np.where(finished, pad_token_id, chosen)
        tokens = np.concatenate([tokens, chosen[:, None]], axis=1)
        mask = np.concatenate([mask, (~finished).astype(np.int64)[:, None]], axis=1)
        finished = finished | (chosen == eos_token_id)
        step_input = chosen[:, None]
        if finished.all():
            break
    return tokens


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into input_ids (B, T) and attention_mask (B, T), int64."""
    ids, mask = left_pad([list(p) for p in prompts], pad_id)
    return ids.numpy(), mask.numpy()


@dataclass
class GreedyResult:
    """Greedy tokens of the candidate and the eager student: the batched run (all prompts left-padded)
    and each prompt alone. ``continuations`` are the candidate's new tokens per prompt (batched run)."""

    identical: bool
    runs: int
    mismatches: list[str] = field(default_factory=list)
    continuations: list[list[int]] = field(default_factory=list)


def check_greedy(student: Student, candidate: StepFn, prompts: Sequence[Sequence[int]],
                 max_new_tokens: int) -> GreedyResult:
    """Greedy-generate ``max_new_tokens`` for all prompts at once and for each alone; compare every run
    token for token with ``student.generate``."""
    cfg = student.config
    runs = [("batched", list(prompts))] + [(f"prompt{i}", [p]) for i, p in enumerate(prompts)]
    result = GreedyResult(identical=True, runs=len(runs))
    for name, group in runs:
        ids, mask = pad_prompts(group, cfg.pad_token_id)
        expected = student.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                    max_new_tokens=max_new_tokens).numpy()
        got = greedy_generate(candidate, ids, mask, max_new_tokens=max_new_tokens,
                              eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)
        if got.shape != expected.shape or not np.array_equal(got, expected):
            result.identical = False
            result.mismatches.append(f"{name}: expected {expected.tolist()}, got {got.tolist()}")
        if name == "batched":
            result.continuations = got[:, ids.shape[1]:].tolist()
    return result


# ---- the fp32 verdict -------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """What report.json holds under ``checks``. ``rtol`` is the relative criterion (max|Δ| / max|ref| of
    logits and of each cache tensor), ``atol`` an optional extra bound on max abs errors (None = off);
    ``failures`` says which criterion failed."""

    atol: float | None
    max_abs_error: float
    max_rel_error: float
    max_abs_error_present: float
    argmax_agreement: float
    decode_steps_checked: int
    batches: list[str]
    greedy_tokens_identical: bool
    greedy_runs: int
    greedy_new_tokens: int
    greedy_mismatches: list[str]
    passed: bool
    rtol: float = FP32_REL_TOLERANCE
    max_rel_error_present: float = 0.0
    criterion: str = ""
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FP32_CRITERION = ("max|got - ref| / max|ref| of logits and of each cache tensor <= rtol (fp32), and greedy "
                  "tokens identical to Student.generate")


def verify_step(student: Student, candidate: StepFn, prompts: Sequence[Sequence[int]], *,
                rtol: float = FP32_REL_TOLERANCE, atol: float | None = None, max_new_tokens: int,
                decode_steps: int = 4, chunk: int = 3, seed: int = 0) -> tuple[CheckResult, GreedyResult]:
    """Full check of an exported fp32 backend (:func:`conversion.criteria.fp32_verdict`): relative
    logits and present errors (prefill, cached chunk, decode steps) within ``rtol``, greedy tokens
    identical to the eager student, and, when ``atol`` is given, max abs errors within ``atol`` too."""
    stats, batches = measure_errors(student, candidate, decode_steps=decode_steps, chunk=chunk, seed=seed)
    greedy = check_greedy(student, candidate, prompts, max_new_tokens)
    verdict = fp32_verdict({"max_rel_error": stats.max_rel_error,
                            "max_rel_error_present": stats.max_rel_error_present},
                           greedy.identical, tolerance=rtol)
    failures = list(verdict.failures)
    if atol is not None:
        for name, value in (("max_abs_error", stats.max_abs_error),
                            ("max_abs_error_present", stats.max_abs_error_present)):
            if not value <= atol:
                failures.append(f"{name} {value:.3g} exceeds the absolute bound {atol:.3g} (--atol)")
    result = CheckResult(
        atol=atol, max_abs_error=stats.max_abs_error, max_rel_error=stats.max_rel_error,
        max_abs_error_present=stats.max_abs_error_present, argmax_agreement=stats.argmax_agreement,
        decode_steps_checked=stats.cached_steps, batches=batches, greedy_tokens_identical=greedy.identical,
        greedy_runs=greedy.runs, greedy_new_tokens=max_new_tokens, greedy_mismatches=greedy.mismatches[:3],
        passed=not failures, rtol=rtol, max_rel_error_present=stats.max_rel_error_present,
        criterion=FP32_CRITERION + ("" if atol is None else "; max abs errors <= atol"), failures=failures,
    )
    return result, greedy


def decode_ms_per_token(step: StepFn, prompt: Sequence[int], new_tokens: int, warmup: int = 2) -> float:
    """Median milliseconds of one cached greedy decode step (batch 1) after prefilling ``prompt``."""
    ids = np.asarray([list(prompt)], dtype=np.int64)
    mask = np.ones_like(ids)
    logits, cache = step(ids, mask, None)
    times = []
    for i in range(warmup + new_tokens):
        token = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        start = time.perf_counter()
        logits, cache = step(token, mask, cache)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` PyTorch intra-op threads (None: leave as is), then restore."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---- inputs and output directory --------------------------------------------------------------------
def load_tokenizer(directory: Path) -> DistilleryTokenizer | None:
    """The bundled tokenizer of an artifact, or None when it has no tokenizer.json."""
    return DistilleryTokenizer.load(directory) if (directory / TOKENIZER_FILE).is_file() else None


def load_prompts(path: Path) -> list[str]:
    """One prompt per non-blank line; ``\\n`` in a line stands for a newline."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts = [line.replace("\\n", "\n") for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (one prompt per non-blank line)")
    return prompts


def encode_prompts(tokenizer: DistilleryTokenizer | None, prompts: Sequence[str],
                   vocab_size: int) -> list[list[int]]:
    """Prompt token ids; without a tokenizer, fixed id sequences of 3, 6, 9, ... tokens (one per prompt)."""
    if tokenizer is None:
        return [[(7 * j + 11 * i + 15) % vocab_size for j in range(3 * (i + 1))] for i in range(len(prompts))]
    encoded = [tokenizer.encode(p) for p in prompts]
    empty = [p for p, ids in zip(prompts, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(f"prompts encode to no tokens: {empty!r}")
    return encoded


@dataclass
class PromptSet:
    """The greedy-check prompts: texts encoded by the artifact's tokenizer (``source="tokenizer"``), or,
    for an artifact without one, fixed token ids (``source="token_ids"``, ``texts`` None)."""

    source: str
    texts: list[str] | None
    ids: list[list[int]]
    tokenizer: DistilleryTokenizer | None

    def samples(self, continuations: Sequence[Sequence[int]], eos_token_id: int) -> list[dict[str, Any]]:
        """Per prompt: its text and ids, and the generated ids cut after the first eos (decoded when
        there is a tokenizer)."""
        out = []
        for i, (prompt_ids, generated) in enumerate(zip(self.ids, continuations, strict=True)):
            new = list(generated)
            new = new[: new.index(eos_token_id) + 1] if eos_token_id in new else new
            out.append({
                "prompt": self.texts[i] if self.texts is not None else None,
                "prompt_ids": list(prompt_ids),
                "token_ids": new,
                "completion": self.tokenizer.decode(new) if self.tokenizer is not None else None,
            })
        return out


def resolve_prompts(student_dir: Path, prompts_file: Path | None, vocab_size: int) -> PromptSet:
    """Prompts for the greedy check: ``prompts_file`` (one per line) or :data:`DEFAULT_PROMPTS`, encoded with
    the artifact's tokenizer; an artifact without tokenizer.json gets fixed token ids, and a prompts file
    is then refused because its text cannot be encoded."""
    tokenizer = load_tokenizer(student_dir)
    if tokenizer is None:
        if prompts_file is not None:
            raise ValueError(f"--prompts needs a tokenizer, but {student_dir} has no {TOKENIZER_FILE}")
        return PromptSet("token_ids", None, encode_prompts(None, DEFAULT_PROMPTS, vocab_size), None)
    texts = load_prompts(prompts_file) if prompts_file is not None else list(DEFAULT_PROMPTS)
    return PromptSet("tokenizer", texts, encode_prompts(tokenizer, texts, vocab_size), tokenizer)


def check_output_dir(out: Path, source: Path) -> None:
    """Refuse an output directory that would destroy the source or unrelated files: it may not be the
    student directory or contain it, and if it exists and is not empty it must hold a previous export
    (a report.json). The exporters then replace it atomically."""
    out, source = out.resolve(), source.resolve()
    if out == source or out in source.parents:
        raise ValueError(
            f"--out {out} is or contains the student directory {source}; choose another directory"
        )
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / REPORT_FILE).is_file():
            raise ValueError(f"--out {out} is not empty and holds no {REPORT_FILE} from a previous export; "
                             "refusing to replace it")


def copy_companion_files(source: Path, out: Path) -> list[str]:
    """Copy config, generation config and tokenizer files that exist in ``source``; returns their names."""
    copied = []
    for name in COMPANION_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            copied.append(name)
    return copied


def model_summary(student: Student, source: Path) -> dict[str, Any]:
    """The ``model`` block of a report: where it came from, its size and shape."""
    cfg = student.config
    return {
        "source": str(source.resolve()),
        "num_parameters": student.num_parameters(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
    }
