"""The record schema of a distillation example, validated where records enter the pipeline."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

StepLabel = Annotated[float, Field(ge=0.0, le=1.0)]


class ChatMessage(BaseModel):
    """One turn of an OpenAI-form conversation; other keys (``name``, ``tool_calls``, ...) are kept and
    passed to the chat template."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, **(self.model_extra or {})}


class Example(BaseModel):
    """One prompt/completion pair, optionally with reasoning steps and per-step labels; or a conversation.

    A chat record carries ``messages`` (OpenAI chat form) instead of ``prompt``/``completion``: it is rendered
    with the tokenizer's chat template and only assistant turns are trained on. For such a record
    ``prompt`` and ``completion`` default to ``""``.

    Types are strict (a number is not a string, ``"0.5"`` is not a float); fields the schema does
    not know are kept on the model (``example.model_extra``) rather than rejected.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: Annotated[str, Field(min_length=1)]
    prompt: str = ""
    completion: str = ""
    messages: list[ChatMessage] | None = None
    steps: list[str] | None = None
    answer: str | None = None
    step_labels: list[StepLabel] | None = None
    task: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """A lone surrogate (``"\\ud800"`` in JSON) is not text: no tokenizer can encode it."""
        where = _first_surrogate(data, "")
        if where is not None:
            raise ValueError(f"{where} contains a lone surrogate (invalid Unicode): fix the text's encoding")
        return data

    @model_validator(mode="before")
    @classmethod
    def _prompt_or_messages(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("messages") is None:
            missing = [key for key in ("prompt", "completion") if key not in data]
            if missing:
                raise ValueError(f"missing {' and '.join(missing)} (a record needs prompt and completion, "
                                 "or messages)")
        return data

    @model_validator(mode="after")
    def _chat_has_an_assistant_turn(self) -> Example:
        if self.messages is not None and not any(m.role == "assistant" for m in self.messages):
            raise ValueError("messages has no assistant turn: nothing to train on")
        return self

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def chat(self) -> list[dict[str, Any]]:
        """The conversation as plain dicts (for a chat template); raises ValueError for prompt records."""
        if self.messages is None:
            raise ValueError(f"example {self.id!r} is not a chat record")
        return [m.as_dict() for m in self.messages]

    @model_validator(mode="after")
    def _labels_match_steps(self) -> Example:
        if self.steps is not None and self.step_labels is not None and len(self.steps) != len(self.step_labels):
            raise ValueError(
                f"step_labels has {len(self.step_labels)} entries but steps has {len(self.steps)}")
        return self


def _first_surrogate(value: Any, where: str) -> str | None:
    """The path of the first string (in nested dicts/lists) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "record"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_surrogate(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every failing field and why, e.g. ``prompt: Input should be a valid string``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
