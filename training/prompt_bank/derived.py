"""Slots computed together rather than drawn one by one from a vocabulary.

Word problems need numbers that make sense together (you cannot give away more apples than you have;
a shared total divides evenly), unit conversions need a value that suits the units, and classification
prompts list several items at once. Each deriver takes the template's random generator and returns the
slot values it provides; it is pure given the generator's state.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from training.prompt_bank.vocab import ADJECTIVES, ANIMALS, FRUITS, NOUNS, VEGETABLES, VERBS

Deriver = Callable[[random.Random], dict[str, str]]


def _n(rng: random.Random, low: int, high: int) -> str:
    return str(rng.randint(low, high))


def add_more(rng: random.Random) -> dict[str, str]:
    """``a`` items plus ``b`` more."""
    return {"a": _n(rng, 3, 40), "b": _n(rng, 2, 25)}


def give_away(rng: random.Random) -> dict[str, str]:
    """``a`` items of which ``b < a`` are given away."""
    a = rng.randint(10, 60)
    return {"a": str(a), "b": str(rng.randint(2, a - 1))}


def groups(rng: random.Random) -> dict[str, str]:
    """``k`` groups of ``each``."""
    return {"k": _n(rng, 2, 12), "each": _n(rng, 2, 15)}


def share(rng: random.Random) -> dict[str, str]:
    """A ``total`` that splits evenly into ``k`` shares."""
    k, each = rng.randint(2, 9), rng.randint(2, 12)
    return {"k": str(k), "total": str(k * each)}


def price_times(rng: random.Random) -> dict[str, str]:
    """``k`` things at ``price`` dollars."""
    return {"price": _n(rng, 2, 20), "k": _n(rng, 2, 9)}


def daily_rate(rng: random.Random) -> dict[str, str]:
    """``p`` per day for ``d`` days."""
    return {"p": _n(rng, 5, 40), "d": _n(rng, 2, 14)}


def speed_time(rng: random.Random) -> dict[str, str]:
    """A speed in km/h (multiple of 10) and a whole number of hours."""
    return {"speed": str(10 * rng.randint(4, 12)), "h": _n(rng, 2, 6)}


def change(rng: random.Random) -> dict[str, str]:
    """A ``price`` paid with a larger ``bill``."""
    bill = rng.choice((20, 50, 100))
    return {"price": str(rng.randint(3, bill - 1)), "bill": str(bill)}


def rectangle(rng: random.Random) -> dict[str, str]:
    """Length ``w`` and a smaller-or-equal width ``h`` in meters."""
    w = rng.randint(3, 20)
    return {"w": str(w), "h": str(rng.randint(2, w))}


def ages(rng: random.Random) -> dict[str, str]:
    """An ``age``, a difference ``diff`` and a number of years ``yrs``."""
    return {"age": _n(rng, 5, 40), "diff": _n(rng, 2, 10), "yrs": _n(rng, 2, 10)}


def class_split(rng: random.Random) -> dict[str, str]:
    """A class of ``n`` students of whom ``f`` are girls (at least 5 of each)."""
    n = rng.randint(18, 32)
    return {"n": str(n), "f": str(rng.randint(5, n - 5))}


def recipe_scale(rng: random.Random) -> dict[str, str]:
    """Cups per cake (whole or half) and a number of cakes."""
    return {"c": rng.choice(("1", "1.5", "2", "2.5", "3")), "k": _n(rng, 2, 6)}


def savings(rng: random.Random) -> dict[str, str]:
    """Weekly savings ``s`` and a ``goal`` that is a whole number of weeks away."""
    s, weeks = rng.randint(5, 25), rng.randint(3, 12)
    return {"s": str(s), "goal": str(s * weeks)}


# (from unit, to unit, smallest value, largest value, allow halves)
CONVERSIONS: tuple[tuple[str, str, int, int, bool], ...] = (
    ("meters", "centimeters", 2, 40, True), ("kilometers", "meters", 2, 30, True),
    ("miles", "kilometers", 2, 50, False), ("kilometers", "miles", 5, 100, False),
    ("inches", "centimeters", 2, 60, False), ("feet", "meters", 3, 100, False),
    ("pounds", "kilograms", 2, 200, False), ("kilograms", "pounds", 2, 100, True),
    ("ounces", "grams", 2, 32, False), ("liters", "milliliters", 2, 10, True),
    ("gallons", "liters", 2, 20, False), ("cups", "milliliters", 2, 8, True),
    ("hours", "minutes", 2, 12, True), ("minutes", "seconds", 2, 30, True), ("days", "hours", 2, 14, False),
    ("weeks", "days", 2, 52, False), ("years", "months", 2, 20, True), ("yards", "meters", 5, 100, False),
    ("centimeters", "millimeters", 2, 50, True), ("tablespoons", "teaspoons", 2, 10, False),
    ("square meters", "square feet", 5, 100, False), ("megabytes", "kilobytes", 2, 64, False),
)


def conversion(rng: random.Random) -> dict[str, str]:
    """A unit pair from :data:`CONVERSIONS` and a value in its range (sometimes a half)."""
    source, target, low, high, halves = rng.choice(CONVERSIONS)
    value = str(rng.randint(low, high))
    if halves and rng.random() < 0.3:
        value += ".5"
    return {"value": value, "from_unit": source, "to_unit": target}


def fahrenheit(rng: random.Random) -> dict[str, str]:
    """A Fahrenheit temperature a person might meet (weather, oven, fever)."""
    return {"temp": str(rng.choice((-4, 14, 32, 50, 59, 68, 72, 77, 86, 95, 98, 104, 212, 350, 375, 400)))}


def celsius(rng: random.Random) -> dict[str, str]:
    """A Celsius temperature a person might meet."""
    return {"temp": str(rng.choice((-10, -5, 0, 5, 12, 18, 21, 25, 30, 37, 40, 100, 180, 200, 220)))}


def produce_list(rng: random.Random) -> dict[str, str]:
    """Five to seven fruits and vegetables mixed, comma-separated."""
    items = rng.sample(FRUITS, rng.randint(2, 4)) + rng.sample(VEGETABLES, rng.randint(2, 3))
    rng.shuffle(items)
    return {"produce_list": ", ".join(items)}


def animal_list(rng: random.Random) -> dict[str, str]:
    """Five different animals, comma-separated."""
    return {"animal_list": ", ".join(rng.sample(ANIMALS, 5))}


def word_list(rng: random.Random) -> dict[str, str]:
    """Six words: two nouns, two verbs and two adjectives in shuffled order."""
    words = rng.sample(NOUNS, 2) + rng.sample(VERBS, 2) + rng.sample(ADJECTIVES, 2)
    rng.shuffle(words)
    return {"word_list": ", ".join(words)}


def number_list(rng: random.Random) -> dict[str, str]:
    """Five to seven small whole numbers, comma-separated."""
    return {"number_list": ", ".join(str(rng.randint(1, 99)) for _ in range(rng.randint(5, 7)))}
