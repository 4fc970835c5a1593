"""The fixed tool catalogue for the tool-call task: tools, closed argument vocabularies, request templates.

Argument values come from small closed sets and appear verbatim in the request, so a tiny model can
learn to copy them into the call; the variety lies in the templates and the combinations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ArgumentValue = str | int

_CITIES = ("Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Oslo", "Cairo", "Lima", "Seoul")
_UNITS = ("celsius", "fahrenheit")
_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF")
_QUERIES = (
    "pasta recipes",
    "jazz concerts",
    "cheap flights",
    "python tutorials",
    "hiking trails",
    "used bikes",
    "museum hours",
    "yoga classes",
    "train times",
    "book reviews",
    "movie times",
    "coffee shops",
)


@dataclass(frozen=True)
class Parameter:
    """One argument of a tool and the closed set of values it takes."""

    name: str
    values: tuple[ArgumentValue, ...]


@dataclass(frozen=True)
class Tool:
    """A callable tool: its parameters (in canonical argument order) and request templates.

    Templates are ``str.format`` strings with one ``{parameter}`` field per parameter. Parameters listed
    in ``distinct`` must take pairwise different values (e.g. currencies ``from`` and ``to``).
    """

    name: str
    parameters: tuple[Parameter, ...]
    templates: tuple[str, ...]
    distinct: tuple[str, ...] = ()

    def sample_arguments(self, rng: random.Random) -> dict[str, ArgumentValue]:
        """Draw arguments in canonical order, honouring ``distinct``."""
        while True:
            arguments = {p.name: rng.choice(p.values) for p in self.parameters}
            chosen = [arguments[name] for name in self.distinct]
            if len(set(chosen)) == len(chosen):
                return arguments

    def request(self, arguments: dict[str, ArgumentValue], template_index: int) -> str:
        """The natural-language request for ``arguments`` using template ``template_index``."""
        return self.templates[template_index].format_map(arguments)


CATALOGUE: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="get_weather",
            parameters=(Parameter("city", _CITIES), Parameter("unit", _UNITS)),
            templates=(
                "What's the weather in {city} in {unit}?",
                "Tell me the temperature in {city}, in {unit} please.",
                "How warm is it in {city}? Answer in {unit}.",
                "Weather report for {city} in {unit}.",
                "I'm going to {city}. What's the weather there in {unit}?",
            ),
        ),
        Tool(
            name="set_timer",
            parameters=(Parameter("minutes", tuple(range(2, 61))),),
            templates=(
                "Set a timer for {minutes} minutes.",
                "Start a {minutes} minute timer.",
                "Remind me in {minutes} minutes.",
                "Can you time {minutes} minutes for me?",
                "Timer for {minutes} minutes please.",
            ),
        ),
        Tool(
            name="convert_currency",
            parameters=(
                Parameter("amount", tuple(range(1, 501))),
                Parameter("from", _CURRENCIES),
                Parameter("to", _CURRENCIES),
            ),
            templates=(
                "Convert {amount} {from} to {to}.",
                "How much is {amount} {from} in {to}?",
                "Exchange {amount} {from} into {to}.",
                "What is {amount} {from} worth in {to}?",
            ),
            distinct=("from", "to"),
        ),
        Tool(
            name="search",
            parameters=(Parameter("query", _QUERIES),),
            templates=(
                "Search the web for {query}.",
                "Look up {query}.",
                "Find {query} for me.",
                "Can you search for {query}?",
            ),
        ),
    )
}
