"""Render a Hugging Face chat template (Jinja) the way ``transformers``' ``apply_chat_template`` does.

Chat templates from the Hub are untrusted code, so they run in Jinja's immutable sandbox, with the
helpers ``transformers`` gives templates (``raise_exception``, ``strftime_now``, a ``tojson`` filter that
does not escape HTML) and with ``trim_blocks``/``lstrip_blocks`` as ``transformers`` sets them, so the text is
the same as ``PreTrainedTokenizerFast.apply_chat_template(messages, tokenize=False)``. ``{% generation %}``
blocks (TRL's assistant-mask marker) render their body unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """A chat template is missing, does not compile, or raised an error while rendering."""


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: renders the body as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], *,
                         add_generation_prompt: bool = False, special_tokens: Mapping[str, str | None] | None = None,
                         tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Render ``messages`` (OpenAI chat form: ``{"role", "content", ...}``) with a Jinja chat template.

    ``special_tokens`` are the template variables ``bos_token``, ``eos_token``, ... (the tokenizer's own).
    Raises :class:`ChatTemplateError` when the template fails (e.g. its ``raise_exception`` fires).
    """
    compiled = _compile(template)
    try:
        return compiled.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                               tools=[dict(t) for t in tools] if tools else None, **dict(special_tokens or {}))
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed on this conversation: {exc}") from exc


def template_from_config(config: Mapping[str, Any]) -> str | None:
    """The default chat template of a ``tokenizer_config.json`` dict (a string, or a list of named templates)."""
    value = config.get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        chosen = named.get("default")
        return chosen if isinstance(chosen, str) else None
    return None
