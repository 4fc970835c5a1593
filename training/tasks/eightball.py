"""A tiny "magic 8-ball" smoke task: a yes/no question gets one of six fixed replies.

The reply is set by the question's first word alone (``Will`` -> ``It is certain.``, ...), so a tiny
model learns the mapping within seconds; the rest of the question is varied filler it must learn to
ignore. Prompt ``8-ball: Will my sister win the game?\\n``, completion ``It is certain.``.
"""

from __future__ import annotations

import random

from training.tasks.markup import ANSWER_CLOSE, ANSWER_OPEN, EOS, PAD, extract_tagged
from training.tasks.schema import Example, make_id

TASK_NAME = "eightball"
PROMPT_PREFIX = "8-ball: "

REPLIES: dict[str, str] = {
    "Will": "It is certain.",
    "Can": "Outlook good.",
    "Should": "Ask again later.",
    "Could": "Cannot predict now.",
    "Would": "Very doubtful.",
    "Might": "Signs point to yes.",
}
_SUBJECTS = ("I", "we", "you", "my sister", "the team", "our dog")
_PREDICATES = (
    "win the game",
    "find the key",
    "see the sea",
    "pass the test",
    "get a new job",
    "learn to sing",
    "finish on time",
    "travel to Rome",
    "meet a friend",
    "bake a cake",
)


def reply_for(prompt_or_question: str) -> str:
    """The reply the rule gives for a question (or an 8-ball prompt); ``ValueError`` for other words."""
    question = prompt_or_question.strip().removeprefix(PROMPT_PREFIX.strip()).strip()
    first_word = question.split(maxsplit=1)[0] if question else ""
    if first_word not in REPLIES:
        raise ValueError(f"question must start with one of {sorted(REPLIES)}: {prompt_or_question!r}")
    return REPLIES[first_word]


def generate(n: int, seed: int) -> list[Example]:
    """Generate ``n`` question/reply pairs, deterministically for ``seed``.

    First word, subject and predicate are drawn uniformly (360 distinct questions; prompts repeat for
    large ``n``). The first ``k`` examples do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{TASK_NAME}:{seed}")
    examples: list[Example] = []
    for index in range(n):
        first_word = rng.choice(tuple(REPLIES))
        question = f"{first_word} {rng.choice(_SUBJECTS)} {rng.choice(_PREDICATES)}?"
        reply = REPLIES[first_word]
        examples.append(
            {
                "id": make_id(TASK_NAME, seed, index),
                "task": TASK_NAME,
                "prompt": f"{PROMPT_PREFIX}{question}\n",
                "completion": reply,
                "answer": reply,
            }
        )
    return examples


def extract_reply(generated_text: str) -> str:
    """The reply in generated text: inside ``<answer>`` tags if present, else up to ``<eos>``/``<pad>``."""
    tagged = extract_tagged(generated_text, ANSWER_OPEN, ANSWER_CLOSE)
    if tagged is not None:
        return tagged.strip()
    ends = [pos for tag in (EOS, PAD) if (pos := generated_text.find(tag)) >= 0]
    return generated_text[: min(ends)].strip() if ends else generated_text.strip()


def verify(example: Example, generated_text: str) -> bool:
    """Whether ``generated_text`` is exactly the rule's reply to the example's question."""
    return extract_reply(generated_text) == reply_for(example["prompt"])


def score(example: Example, generated_text: str) -> dict[str, float]:
    """``accuracy``: 1.0 if :func:`verify` holds, else 0.0."""
    return {"accuracy": float(verify(example, generated_text))}
