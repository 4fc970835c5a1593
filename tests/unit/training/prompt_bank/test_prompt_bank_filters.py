"""Tests for the prompt bank filters: exact and near duplicates, length, repetition, stage counts."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from training.prompt_bank.filters import (
    LengthLimits,
    NearDupConfig,
    RepetitionLimits,
    apply_stages,
    exact_dedup,
    is_repetitive,
    jaccard,
    length_filter,
    longest_char_run,
    near_dedup,
    normalize,
    repeated_ngram_share,
    repetition_filter,
    shingles,
    within_length,
)


def test_normalize() -> None:
    assert normalize("  What is  a Noun? ") == normalize("what is a noun") == "what is a noun"
    assert normalize("Ｆｕｌｌ-width_text!!") == "full width text"
    assert normalize("...") == ""


def test_shingles_and_jaccard() -> None:
    assert shingles("The cat, the CAT!") == frozenset({"the", "cat"})
    assert shingles("a b c", ngram=2) == frozenset({"a b", "b c"})
    assert shingles("a b", ngram=3) == frozenset({"a b"})
    assert shingles("") == frozenset()
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)
    assert jaccard(frozenset(), frozenset()) == 1.0
    with pytest.raises(ValueError):
        shingles("a", ngram=0)


def test_exact_dedup_keeps_first_normalized_occurrence() -> None:
    items = ["Hello, world!", "hello world", "Goodbye.", "HELLO   WORLD?", "goodbye"]
    assert exact_dedup(items) == ["Hello, world!", "Goodbye."]
    records = [{"p": "A b"}, {"p": "a B."}, {"p": "c"}]
    assert exact_dedup(records, key=lambda r: r["p"]) == [{"p": "A b"}, {"p": "c"}]


_texts = st.lists(st.text(alphabet=st.sampled_from("ab cAB.!"), max_size=6), max_size=25)


@settings(max_examples=150, deadline=None)
@given(items=_texts, seed=st.integers(0, 1000))
def test_exact_dedup_idempotent_and_order_independent(items: list[str], seed: int) -> None:
    once = exact_dedup(items)
    assert exact_dedup(once) == once
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    kept = {normalize(text) for text in once}
    assert kept == {normalize(text) for text in exact_dedup(shuffled)} == {normalize(text) for text in items}
    assert len(once) == len(kept)


PARAPHRASE = "Can you give me three simple tips for sleeping better at night?"
ONE_WORD_PARAPHRASES = (
    "Could you give me three simple tips for sleeping better at night?",
    "Can you give me three easy tips for sleeping better at night?",
    "Can you give me three simple tips for sleeping better at night",
    "Can you give me three simple tips for sleeping well at night?",
)
DIFFERENT = (
    "Write a haiku about autumn leaves.",
    "Explain how a rainbow forms.",
    "Define osmosis.",
    "Define gravity.",  # differs from the previous one by one word, but too short to be a paraphrase
    "Convert 5 miles to kilometers.",
    "What is the capital of Kenya?",
    "What is the capital of Peru?",
    "Give me three simple tips for learning to play the guitar as an adult.",
)


def test_near_dedup_removes_one_word_paraphrases_keeps_different_prompts() -> None:
    items = [PARAPHRASE, *ONE_WORD_PARAPHRASES, *DIFFERENT]
    assert near_dedup(items) == [PARAPHRASE, *DIFFERENT]


def test_near_dedup_threshold_follows_documented_rule() -> None:
    """One substitution in n words gives Jaccard (n - 1) / (n + 1): >= 0.8 from n = 9 on."""
    for n in range(4, 16):
        base = [f"w{i}" for i in range(n)]
        changed = base[:-1] + ["other"]
        kept = near_dedup([" ".join(base), " ".join(changed)])
        assert len(kept) == (1 if n >= 9 else 2), n


def test_near_dedup_keeps_first_and_items_without_words() -> None:
    items = ["", "...", PARAPHRASE, ONE_WORD_PARAPHRASES[0]]
    assert near_dedup(items) == ["", "...", PARAPHRASE]
    assert near_dedup(list(reversed(items[2:]))) == [ONE_WORD_PARAPHRASES[0]]
    assert near_dedup([]) == []


def test_near_dedup_agrees_with_exact_jaccard_on_small_sets() -> None:
    """MinHash only proposes candidates; the decision is the exact Jaccard, so on small sets the result
    equals a brute-force greedy filter."""
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(14)]
    items = [" ".join(rng.sample(vocabulary, rng.randint(6, 12))) for _ in range(120)]
    config = NearDupConfig(threshold=0.7, lsh_threshold=0.5)
    expected: list[str] = []
    for item in items:
        if all(jaccard(shingles(item), shingles(other)) < 0.7 for other in expected):
            expected.append(item)
    assert 0 < len(expected) < len(items)
    assert near_dedup(items, config=config) == expected


def test_minhash_estimate_tracks_exact_jaccard() -> None:
    from datasketch import MinHash

    rng = random.Random(3)
    for _ in range(20):
        a = set(rng.sample(range(200), 60))
        b = set(rng.sample(sorted(a), 30)) | set(rng.sample(range(200, 400), rng.randint(0, 40)))
        ma, mb = MinHash(num_perm=256), MinHash(num_perm=256)
        for x in a:
            ma.update(str(x).encode())
        for x in b:
            mb.update(str(x).encode())
        assert abs(ma.jaccard(mb) - jaccard(frozenset(a), frozenset(b))) < 0.15


def test_near_dup_config_validation() -> None:
    with pytest.raises(ValidationError):
        NearDupConfig(threshold=0.5, lsh_threshold=0.6)
    with pytest.raises(ValidationError):
        NearDupConfig(threshold=0.0)
    with pytest.raises(ValidationError):
        NearDupConfig(bogus=1)


def test_length_filter() -> None:
    limits = LengthLimits(min_chars=3, max_chars=20, min_words=2, max_words=3)
    items = ["hi", "hi there", "one two three four", "a b", "x" * 25, "  padded words  "]
    assert within_length("hi there", limits)
    assert not within_length("hi", limits)
    assert not within_length("one two three four", limits)
    assert not within_length("xxxxxxxxxxxx " * 2, limits)
    assert within_length("  ab c  ", limits)
    assert length_filter(items, limits) == ["hi there", "a b", "  padded words  "]  # kept unchanged


def test_length_filter_tokens_only_with_counter() -> None:
    limits = LengthLimits(max_tokens=3)
    text = "a b c d e"
    assert within_length(text, limits)  # no counter: token limits are not applied
    assert not within_length(text, limits, count_tokens=lambda s: len(s.split()))
    assert within_length("a b", limits, count_tokens=lambda s: len(s.split()))
    assert not within_length("a", LengthLimits(min_tokens=2), count_tokens=len)


def test_length_limits_validation() -> None:
    with pytest.raises(ValidationError):
        LengthLimits(min_chars=10, max_chars=5)
    with pytest.raises(ValidationError):
        LengthLimits(min_words=-1)


# Test data only: hand-written stand-ins for teacher responses (no teacher ships with this module).
GOOD_RESPONSES = (
    "Paris is the capital of France.",
    "1. Drink water.\n2. Sleep eight hours.\n3. Walk every day.",
    "def reverse(text):\n    \"\"\"Return text reversed.\"\"\"\n    return text[::-1]\n\nprint(reverse('abc'))",
    "Photosynthesis is how plants use sunlight, water and air to make their own food. It happens in the "
    "leaves, and it gives off the oxygen we breathe.",
    "if x:\n" + " " * 40 + "return 1",  # deep indentation is whitespace, not a character run
)
DEGENERATE_RESPONSES = (
    "I am sorry. " * 20,
    "The answer is the answer is the answer is the answer is the answer is the answer is the answer is",
    "Wow" + "!" * 30,
    "Paris is the capital of Franceeeeeeeeeeeeeeeeeeeeeeeeeee.",
)


def test_repetition_measures() -> None:
    assert repeated_ngram_share("a b c d e") == (0.0, 3)
    share, count = repeated_ngram_share("x y z " * 4)
    assert count == 10 and share == pytest.approx(0.7)
    assert repeated_ngram_share("a b") == (0.0, 0)
    assert longest_char_run("aaab   b") == 3
    assert longest_char_run("     ") == 0
    assert longest_char_run("") == 0


def test_repetition_filter_flags_degenerate_responses_only() -> None:
    for text in GOOD_RESPONSES:
        assert not is_repetitive(text), text
    for text in DEGENERATE_RESPONSES:
        assert is_repetitive(text), text
    mixed = list(itertools.chain(*zip(GOOD_RESPONSES, DEGENERATE_RESPONSES, strict=False)))
    assert repetition_filter(mixed) == [t for t in mixed if t in GOOD_RESPONSES]


def test_repetition_limits_short_texts_and_thresholds() -> None:
    assert not is_repetitive("no no no no")  # too few n-grams to judge
    strict = RepetitionLimits(max_repeated_ngram_share=0.0, min_ngrams=1)
    assert is_repetitive("a b c a b c", strict)
    assert not is_repetitive("a b c a b c", RepetitionLimits(min_ngrams=1, max_repeated_ngram_share=0.5))
    assert is_repetitive("ab" + "c" * 5, RepetitionLimits(max_char_run=4))


def test_apply_stages_counts() -> None:
    items = ["a b c", "A B C", "short", "a b c d e f g h i j k", "x y"]
    kept, counts = apply_stages(items, [
        ("exact_dup", exact_dedup),
        ("length", lambda xs: length_filter(xs, LengthLimits(min_words=2, max_words=5))),
    ])
    assert kept == ["a b c", "x y"]
    assert [(c.name, c.count_in, c.count_out, c.removed) for c in counts] == [
        ("exact_dup", 5, 4, 1), ("length", 4, 2, 2)]
    assert counts[1].as_dict() == {"name": "length", "in": 4, "out": 2, "removed": 2}
