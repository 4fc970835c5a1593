"""Pure filters for prompts and teacher-written responses.

Every filter takes a sequence of items plus a ``key`` that picks the text to judge, and returns the kept
items in their input order (nothing is mutated):

* :func:`exact_dedup` -- drops items whose *normalized* text (:func:`normalize`: Unicode NFKC, case-folded,
  punctuation and whitespace runs collapsed to one space) was already seen; the first occurrence wins.
* :func:`near_dedup` -- drops items whose word-shingle set has Jaccard similarity ``>= threshold`` with an
  item already kept. MinHash + LSH (``datasketch``) proposes candidates; every candidate is then checked
  with the *exact* Jaccard of the two shingle sets, so an item is never dropped on an estimate alone.
  The defaults (word unigrams, threshold 0.8) mean: a one-word substitution makes two texts of ``n``
  words similar at ``(n - 1) / (n + 1)``, which reaches 0.8 from 9 words on. So a paraphrase of a 9+ word
  prompt that changes one word is removed, while short prompts that differ in their one content word
  ("Define osmosis." / "Define gravity.") are kept: they carry too little text to tell a paraphrase
  from a different question.
* :func:`length_filter` -- keeps texts within character, word and (optionally) token limits.
* :func:`repetition_filter` -- drops degenerate teacher output: a large share of repeated word n-grams
  (a model stuck in a loop) or one non-space character repeated many times in a row.

:func:`apply_stages` chains filters and records how many items each one took in and let out.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field, model_validator

from training.config_base import FrozenStrictModel

T = TypeVar("T")
TextKey = Callable[[Any], str]

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _identity(item: Any) -> str:
    return item


def normalize(text: str) -> str:
    """Return ``text`` in the form duplicates are compared in.

    NFKC-normalized, case-folded, every run of punctuation/whitespace replaced by one space, stripped:
    ``"What is  a Noun?"`` and ``"what is a noun"`` normalize to the same string.
    """
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def shingles(text: str, ngram: int = 1) -> frozenset[str]:
    """Word ``ngram``-grams of the normalized ``text`` (the whole text when it has fewer words)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    words = normalize(text).split()
    if len(words) <= ngram:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """Exact Jaccard similarity ``|a & b| / |a | b|``; two empty sets count as identical (1.0)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def exact_dedup(items: Sequence[T], key: TextKey = _identity) -> list[T]:
    """Keep the first item of every group with the same :func:`normalize`-d text, in input order."""
    seen: set[str] = set()
    kept: list[T] = []
    for item in items:
        text = normalize(key(item))
        if text not in seen:
            seen.add(text)
            kept.append(item)
    return kept


class NearDupConfig(FrozenStrictModel):
    """Near-duplicate settings (see the module docstring for what the defaults remove).

    ``threshold`` is on the exact Jaccard of word-``ngram`` shingle sets; ``lsh_threshold`` (lower, for
    recall) is what the MinHash LSH index uses to propose candidates, which are then verified exactly.
    """

    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    ngram: int = Field(default=1, ge=1, le=5)
    num_perm: int = Field(default=128, ge=16, le=1024)
    lsh_threshold: float = Field(default=0.6, gt=0.0, le=1.0)
    seed: int = 1

    @model_validator(mode="after")
    def _lsh_not_above_threshold(self) -> NearDupConfig:
        if self.lsh_threshold > self.threshold:
            raise ValueError(f"lsh_threshold {self.lsh_threshold} must be <= threshold {self.threshold}")
        return self


def near_dedup(items: Sequence[T], key: TextKey = _identity, config: NearDupConfig | None = None) -> list[T]:
    """Drop every item that is a near-duplicate of an earlier *kept* item; keep the rest in input order.

    Items whose text has no words are kept and not indexed (the length filter is the place to drop them).
    """
    from datasketch import MinHash, MinHashLSH  # imported here: the heavier dependency loads on use

    config = config or NearDupConfig()
    sets = [shingles(key(item), config.ngram) for item in items]
    hashes = MinHash.bulk([[s.encode("utf-8") for s in sorted(shingle_set)] for shingle_set in sets],
                          num_perm=config.num_perm, seed=config.seed)
    index = MinHashLSH(threshold=config.lsh_threshold, num_perm=config.num_perm)
    kept: list[T] = []
    for position, (item, shingle_set, minhash) in enumerate(zip(items, sets, hashes, strict=True)):
        if not shingle_set:
            kept.append(item)
            continue
        candidates = index.query(minhash)
        if any(jaccard(shingle_set, sets[int(other)]) >= config.threshold for other in candidates):
            continue
        index.insert(str(position), minhash)
        kept.append(item)
    return kept


class LengthLimits(FrozenStrictModel):
    """Inclusive length limits; ``None`` means no limit on that side.

    Tokens are counted only when a ``count_tokens`` callable is passed to :func:`within_length` and a
    token limit is set.
    """

    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    min_words: int = Field(default=0, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    min_tokens: int = Field(default=0, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LengthLimits:
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words"), ("min_tokens", "max_tokens")):
            upper = getattr(self, high)
            if upper is not None and getattr(self, low) > upper:
                raise ValueError(f"{low} {getattr(self, low)} is above {high} {upper}")
        return self


def within_length(text: str, limits: LengthLimits, count_tokens: Callable[[str], int] | None = None) -> bool:
    """Whether the stripped ``text`` is within ``limits`` (characters, whitespace words, tokens)."""
    stripped = text.strip()
    n_words = len(stripped.split())
    if len(stripped) < limits.min_chars or (limits.max_chars is not None and len(stripped) > limits.max_chars):
        return False
    if n_words < limits.min_words or (limits.max_words is not None and n_words > limits.max_words):
        return False
    if count_tokens is not None and (limits.min_tokens > 0 or limits.max_tokens is not None):
        n_tokens = count_tokens(stripped)
        if n_tokens < limits.min_tokens or (limits.max_tokens is not None and n_tokens > limits.max_tokens):
            return False
    return True


def length_filter(items: Sequence[T], limits: LengthLimits, key: TextKey = _identity,
                  count_tokens: Callable[[str], int] | None = None) -> list[T]:
    """Keep the items whose text is :func:`within_length`."""
    return [item for item in items if within_length(key(item), limits, count_tokens)]


class RepetitionLimits(FrozenStrictModel):
    """When a text counts as degenerate.

    ``max_repeated_ngram_share``: of all word ``ngram``-grams, the share that repeat an earlier one
    (``1 - distinct / total``); judged only from ``min_ngrams`` n-grams on, so short answers are never
    flagged. Natural prose stays near 0; a loop such as "I am sorry. I am sorry. ..." approaches 1.
    ``max_char_run``: the longest run of one non-space character allowed ("!!!!!!", "aaaaaa");
    whitespace runs (code indentation) are not counted.
    """

    ngram: int = Field(default=3, ge=1, le=8)
    max_repeated_ngram_share: float = Field(default=0.3, ge=0.0, le=1.0)
    min_ngrams: int = Field(default=10, ge=1)
    max_char_run: int = Field(default=20, ge=2)


def repeated_ngram_share(text: str, ngram: int = 3) -> tuple[float, int]:
    """``(share of word n-grams that repeat an earlier one, number of n-grams)`` of the case-folded text."""
    words = text.casefold().split()
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(Counter(grams)) / len(grams), len(grams)


def longest_char_run(text: str) -> int:
    """Length of the longest run of one repeated non-whitespace character (0 for an all-space text)."""
    best = run = 0
    previous = ""
    for char in text:
        run = run + 1 if char == previous else 1
        previous = char
        if not char.isspace():
            best = max(best, run)
    return best


def is_repetitive(text: str, limits: RepetitionLimits | None = None) -> bool:
    """Whether ``text`` breaks either repetition limit."""
    limits = limits or RepetitionLimits()
    share, n_grams = repeated_ngram_share(text, limits.ngram)
    if n_grams >= limits.min_ngrams and share > limits.max_repeated_ngram_share:
        return True
    return longest_char_run(text) > limits.max_char_run


def repetition_filter(items: Sequence[T], limits: RepetitionLimits | None = None,
                      key: TextKey = _identity) -> list[T]:
    """Keep the items whose text is not :func:`is_repetitive`."""
    return [item for item in items if not is_repetitive(key(item), limits)]


@dataclass(frozen=True)
class StageCount:
    """How many items one filter stage took in and let out."""

    name: str
    count_in: int
    count_out: int

    @property
    def removed(self) -> int:
        """Items the stage removed."""
        return self.count_in - self.count_out

    def as_dict(self) -> dict[str, Any]:
        """JSON form for manifests: name, in, out, removed."""
        return {"name": self.name, "in": self.count_in, "out": self.count_out, "removed": self.removed}


Stage = tuple[str, Callable[[Sequence[T]], list[T]]]


def apply_stages(items: Sequence[T], stages: Sequence[Stage[T]]) -> tuple[list[T], list[StageCount]]:
    """Run ``stages`` (name, filter) in order; return the survivors and one :class:`StageCount` per stage."""
    current = list(items)
    counts: list[StageCount] = []
    for name, stage in stages:
        survivors = stage(current)
        counts.append(StageCount(name, len(current), len(survivors)))
        current = survivors
    return current, counts
