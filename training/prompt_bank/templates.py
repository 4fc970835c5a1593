"""Prompt templates, grouped by category.

A template's text has ``{slot}`` placeholders. A slot named like a key of :data:`SLOTS` is drawn from
that vocabulary; ``{name_2}`` draws a second value of ``name`` that differs from ``{name}``; any other
slot must be provided by the template's ``derive`` function (:mod:`training.prompt_bank.derived`).

Templates whose only slot is a single word are kept short on purpose (at most seven fixed words): the
near-duplicate filter treats one-word substitutions in 9+ word prompts as paraphrases (see
:mod:`training.prompt_bank.filters`), so longer templates combine several slots or multi-word values.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from training.prompt_bank import derived
from training.prompt_bank.derived import Deriver
from training.prompt_bank.texts import (
    BAD_SENTENCES,
    BUGGY_SNIPPETS,
    CHILD_QUESTIONS,
    COMPLEX_SENTENCES,
    CUSTOMER_MESSAGES,
    FACTUAL_QUESTIONS,
    HEADLINES,
    PASSAGES,
    PY_SNIPPETS,
    REVIEWS,
    REWRITE_SENTENCES,
    SCIENCE_QUESTIONS,
    SPAM_SNIPPETS,
    STATEMENTS,
)
from training.prompt_bank.vocab import VOCAB

SLOTS: dict[str, tuple[str, ...]] = {
    **VOCAB,
    "sentence": REWRITE_SENTENCES,
    "passage": PASSAGES,
    "review": REVIEWS,
    "message": CUSTOMER_MESSAGES,
    "headline": HEADLINES,
    "statement": STATEMENTS,
    "email_snippet": SPAM_SNIPPETS,
    "bad_sentence": BAD_SENTENCES,
    "complex": COMPLEX_SENTENCES,
    "child_question": CHILD_QUESTIONS,
    "factual_question": FACTUAL_QUESTIONS,
    "science_question": SCIENCE_QUESTIONS,
    "snippet": PY_SNIPPETS,
    "buggy": BUGGY_SNIPPETS,
}


@dataclass(frozen=True)
class Template:
    """One prompt pattern: ``name`` is ``<category>.<short name>``."""

    name: str
    text: str
    derive: Deriver | None = None

    @property
    def category(self) -> str:
        """The category, the part of the name before the first dot."""
        return self.name.split(".", 1)[0]

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The slot names in the text, in order of first appearance."""
        names = [field for _, field, _, _ in string.Formatter().parse(self.text) if field]
        return tuple(dict.fromkeys(names))


def vocab_name(placeholder: str) -> str:
    """The vocabulary a placeholder draws from: ``animal_2`` -> ``animal``."""
    base, _, suffix = placeholder.rpartition("_")
    return base if base and suffix.isdigit() else placeholder


def _t(name: str, *texts: str, derive: Deriver | None = None) -> list[Template]:
    """Templates ``name.1``, ``name.2``, ... sharing one deriver."""
    return [Template(f"{name}.{i}", text, derive) for i, text in enumerate(texts, start=1)]


TEMPLATES: tuple[Template, ...] = tuple(
    # factual: people, inventions, events, how things work
    _t("factual.person", "Who was {person}?", "What is {person} best known for?",
       "Give me a two-sentence biography of {person}.", "Why is {person} remembered today?",
       "What did {person} and {person_2} have in common?")
    + _t("factual.invention", "Who invented {invention}?", "When was {invention} invented?",
         "How did {invention} change everyday life?", "Which came first, {invention} or {invention_2}?")
    + _t("factual.event", "What was {event}?", "Why was {event} important?",
         "Summarize {event} in three sentences.", "When did {event} happen?",
         "What happened first: {event} or {event_2}?")
    + _t("factual.question", "{factual_question}", "Quick question: {factual_question}",
         "{factual_question} Please answer in two or three sentences.")
    # definitions
    + _t("definition.term", "What does '{term}' mean?", "Define {term} in one sentence.",
         "Give a simple definition of {term}.", "What is meant by '{term}'?",
         "Explain the term '{term}' briefly.", "Define {term} and give an example.",
         "Use '{term}' in an example sentence.", "What is the meaning of the word '{term}'?")
    # explanations for a child
    + _t("explain_child.concept", "Explain {science_concept} to a {age}-year-old.",
         "How would you explain {science_concept} to a young kid?",
         "Explain {science_concept} like I am five.",
         "My {relative} asked me about {science_concept}. How do I explain it simply?",
         "Use a simple comparison to explain {science_concept} to a child.",
         "Explain {term} to a child using an everyday example.")
    + _t("explain_child.question", "A child asks: \"{child_question}\" How would you answer?",
         "Answer this question from a {age}-year-old: {child_question}",
         "My {relative} wants to know: {child_question} What should I say?")
    # how-to steps
    + _t("howto.task", "How do I {howto_task}?", "What are the steps to {howto_task}?",
         "Give me step-by-step instructions to {howto_task}.",
         "Explain how to {howto_task} in {step_count} simple steps.",
         "I have never tried to {howto_task} before. Where should I start?",
         "What is the easiest way to {howto_task}?",
         "What mistakes should beginners avoid when they {howto_task}?",
         "List what I need to {howto_task}.", "How can I {howto_task} {howto_constraint}?")
    # short creative writing
    + _t("creative.write", "Write {form} about {creative_topic}.",
         "Write {form} about {creative_topic}. Make it {mood}.",
         "Compose {form} about {creative_topic} for a child.",
         "Can you write {form} with a {mood} tone about {creative_topic}?",
         "Write a title and an opening line for a story about {creative_topic}.",
         "Describe {creative_topic} using all five senses.",
         "Give me three creative names for {nameable}.",
         "Suggest a {mood} name and a one-line slogan for {nameable}.")
    # rewriting a given short text
    + _t("rewrite.sentence", "Rewrite this sentence to be {style}: \"{sentence}\"",
         "Make the following text {style}:\n\n{sentence}",
         "Can you rephrase this so it sounds {style}? {sentence}",
         "Rewrite the following in the voice of {voice}: \"{sentence}\"",
         "Paraphrase: {sentence}", "Turn this into a polite note for a coworker: {sentence}")
    # summarizing a given short text
    + _t("summarize.passage", "Summarize this in one sentence:\n\n{passage}",
         "What is the main idea of the following paragraph?\n\n{passage}",
         "Summarize the paragraph below in {word_limit} words or fewer.\n\n{passage}",
         "Write a headline for this short news item:\n\n{passage}",
         "List the key points of this passage as bullet points:\n\n{passage}",
         "Explain this text to a ten-year-old in two sentences:\n\n{passage}")
    # classification
    + _t("classify.text", "Is the sentiment of this review positive, negative, or neutral? \"{review}\"",
         "Rate this review from 1 (very unhappy) to 5 (very happy) and explain briefly: \"{review}\"",
         "Classify this customer message as a complaint, a question, or praise: \"{message}\"",
         "Which category fits this headline best: sports, politics, science, business, or "
         "entertainment? \"{headline}\"",
         "Is this email spam or not spam? Answer in one word, then give a reason.\n\n{email_snippet}",
         "Is the following statement a fact or an opinion? \"{statement}\"")
    + _t("classify.fruit_veg", "Sort these into fruits and vegetables: {produce_list}",
         derive=derived.produce_list)
    + _t("classify.mammals", "Which of these animals are mammals: {animal_list}?", derive=derived.animal_list)
    + _t("classify.parts_of_speech", "Label each word as a noun, verb, or adjective: {word_list}",
         derive=derived.word_list)
    # simple math word problems
    + _t("math_word.add", "{name} has {a} {item} and gets {b} more from {name_2}. How many {item} does "
         "{name} have now?", derive=derived.add_more)
    + _t("math_word.subtract", "{name} had {a} {item} and gave {b} of them to {name_2}. How many {item} "
         "does {name} have left?", derive=derived.give_away)
    + _t("math_word.groups", "There are {k} boxes with {each} {item} in each box. How many {item} are there "
         "in total?", derive=derived.groups)
    + _t("math_word.share", "{name} wants to share {total} {item} equally among {k} friends. How many does "
         "each friend get?", derive=derived.share)
    + _t("math_word.price", "One {shop_item} costs ${price}. How much do {k} of them cost?",
         derive=derived.price_times)
    + _t("math_word.rate", "{name} reads {p} pages every day. How many pages will {name} read in {d} days?",
         derive=derived.daily_rate)
    + _t("math_word.speed", "A train travels at {speed} kilometers per hour. How far does it go in {h} hours?",
         derive=derived.speed_time)
    + _t("math_word.change", "{name} buys a {shop_item} for ${price} and pays with a ${bill} bill. How much "
         "change does {name} get?", derive=derived.change)
    + _t("math_word.area", "A garden is {w} meters long and {h} meters wide. What is its area? Show your work.",
         "A rectangle is {w} meters long and {h} meters wide. What is its perimeter?",
         derive=derived.rectangle)
    + _t("math_word.ages", "{name} is {age} years old. {name_2} is {diff} years older. How old will {name_2} "
         "be in {yrs} years?", derive=derived.ages)
    + _t("math_word.class", "A class has {n} students and {f} of them are girls. How many boys are in the "
         "class?", derive=derived.class_split)
    + _t("math_word.recipe", "A recipe needs {c} cups of flour for one cake. How much flour do I need for {k} "
         "cakes?", derive=derived.recipe_scale)
    + _t("math_word.savings", "{name} saves ${s} every week. How many weeks will it take to save ${goal}?",
         derive=derived.savings)
    + _t("math_word.numbers", "What is the average of these numbers: {number_list}?",
         "Add up these numbers and explain each step: {number_list}", derive=derived.number_list)
    # unit conversion
    + _t("unit_conversion.units", "How many {to_unit} are in {value} {from_unit}?",
         "Convert {value} {from_unit} to {to_unit}.", "What is {value} {from_unit} in {to_unit}?",
         "I have {value} {from_unit}. How much is that in {to_unit}?",
         "Convert {value} {from_unit} to {to_unit} and show the formula you used.",
         derive=derived.conversion)
    + _t("unit_conversion.fahrenheit", "What is {temp} degrees Fahrenheit in Celsius?",
         "Convert {temp}°F to Celsius.", derive=derived.fahrenheit)
    + _t("unit_conversion.celsius", "What is {temp} degrees Celsius in Fahrenheit?",
         "My oven or thermometer shows {temp}°C. What is that in Fahrenheit?", derive=derived.celsius)
    # lists
    + _t("lists.topic", "List {list_count} {list_topic}.", "Name {list_count} {list_topic}.",
         "Give me a list of {list_count} {list_topic}, one per line.",
         "What are {list_count} {list_topic}? Answer as a bulleted list.",
         "Can you suggest {list_count} {list_topic}? Keep each item short.",
         "Make a numbered list of {list_count} {list_topic}.", "Quick question: what are some {list_topic}?")
    # comparisons
    + _t("compare.pair", "What is the difference between {pair}?", "Compare {pair} in a few sentences.",
         "How are {pair} alike, and how are they different?", "Give me a quick comparison of {pair}.",
         "Explain the main differences between {pair} to a beginner.", "What do {pair} have in common?",
         "Make a short table comparing {pair}.", "In two sentences, contrast {pair}.")
    # advice
    + _t("advice.situation", "I need some advice: {situation}. What should I do?",
         "What can I do if {situation}?", "My problem: {situation}. Any advice?",
         "Give me {tip_count} short, practical tips: {situation}.",
         "{situation}. What is one small step I can take today?",
         "Be honest and kind: {situation}. What would you do in my place?",
         "{situation}. Can you help me make a simple plan for this week?")
    # emails and letters
    + _t("email.write", "Write an email to {recipient} {purpose}.", "Write a {tone} email to {recipient} {purpose}.",
         "Draft a short letter to {recipient} {purpose}. Keep it {tone}.",
         "Help me write a message to {recipient} {purpose}.",
         "Write a subject line and a {tone} email to {recipient}, {purpose}.",
         "Can you write a text message to {recipient} {purpose}? Make it {tone}.",
         "Write a thank-you note to {recipient} for {thanks_for}.")
    # Python code
    + _t("code_python.task", "Write a Python function that {code_task}.",
         "Show me a short Python snippet that {code_task}.",
         "How do I write Python code that {code_task}? Include an example.",
         "Write a Python function with a docstring that {code_task}.",
         "Write Python code that {code_task}, and explain it line by line.",
         "What is the simplest Python program that {code_task}?")
    + _t("code_python.read", "Explain what this Python code does:\n\n{snippet}",
         "What does this Python code print?\n\n{snippet}", "Find the bug in this Python code:\n\n{buggy}",
         "This Python code does not work. Fix it and explain the fix:\n\n{buggy}")
    # trivia: animals, places, science
    + _t("trivia.animal", "Tell me a fun fact about the {animal}.", "What does the {animal} eat?",
         "Where does the {animal} live in the wild?", "How long does the {animal} usually live?",
         "Which is faster, the {animal} or the {animal_2}?", "Which is heavier, the {animal} or the {animal_2}?",
         "How does the {animal} protect itself?")
    + _t("trivia.place", "What is {landmark} famous for?", "Where is {landmark}?",
         "What is one interesting fact about {city}?", "Which country is {city} in?",
         "What is the capital of {country}?", "What language do people speak in {country}?",
         "What is a traditional food from {country}?", "Name a famous landmark in {country}.",
         "What is the longest river in {continent}?", "What is the tallest mountain in {continent}?")
    + _t("trivia.science", "Which planet is {planet_clue}?", "{science_question}",
         "Science quiz: {science_question}", "What causes {phenomenon}?")
    # grammar fixing
    + _t("grammar_fix.sentence", "Fix the grammar in this sentence: {bad_sentence}",
         "Correct this sentence: \"{bad_sentence}\"",
         "What is wrong with this sentence, and how would you fix it? \"{bad_sentence}\"",
         "Proofread: {bad_sentence}", "Please fix any mistakes: {bad_sentence}",
         "Rewrite this with correct grammar and explain the change: {bad_sentence}",
         "Is this sentence grammatically correct? \"{bad_sentence}\"")
    + _t("grammar_fix.usage", "When should I use {confusable}?",
         "Explain the difference between {confusable} with one example each.")
    # saying it more simply
    + _t("simplify.sentence", "Say this more simply: {complex}", "Rewrite this in plain English: \"{complex}\"",
         "Explain what this means in everyday words: {complex}",
         "Make this sentence easier for a child to understand: {complex}",
         "Translate this jargon into simple language: {complex}",
         "Simplify the following sentence without changing its meaning:\n{complex}",
         "What is this sentence really saying? \"{complex}\"")
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(template.category for template in TEMPLATES))
