"""Model card (``README.md``) for a student artifact: what it is, how it was made, what it scores."""

from __future__ import annotations

import json
from typing import Any

from training.model_config import ModelConfig


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return str(value)


def render_model_card(config: ModelConfig, num_parameters: int, card: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card with a Hugging Face YAML header.

    card keys used when present: ``name``, ``description``, ``data``, ``teacher``, ``losses``, ``training``,
    ``limits`` (str or list of str); other keys are listed under "Other details".
    """
    name = card.get("name", "distillery-student")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [distillery, knowledge-distillation, llama]",
        "---",
        f"# {name}",
        "",
        str(card.get("description", "A Llama-architecture causal LM produced by Distillery.")),
        "",
        "## Architecture",
        "",
        f"- parameters: {num_parameters:,}",
        f"- layers: {config.num_hidden_layers}, hidden: {config.hidden_size}, MLP: {config.intermediate_size}",
        f"- attention heads: {config.num_attention_heads} (key/value heads: {config.num_key_value_heads}), "
        f"head dim: {config.head_dim}",
        f"- vocabulary: {config.vocab_size}, max positions: {config.max_position_embeddings}, "
        f"tied embeddings: {config.tie_word_embeddings}",
        "",
        "Loads with `transformers.LlamaForCausalLM.from_pretrained(dir)` and "
        "`training.model.Student.from_pretrained(dir)` (which verifies `manifest.json`).",
        "",
    ]
    for key, title in (("data", "Data"), ("teacher", "Teacher"), ("losses", "Losses"), ("training", "Training")):
        if key in card:
            lines += [f"## {title}", "", _format_value(card[key]), ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_format_value(v)} |" for k, v in sorted(metrics.items())]
        lines.append("")
    limits = card.get("limits")
    lines += ["## Limits", ""]
    if isinstance(limits, list | tuple):
        lines += [f"- {item}" for item in limits]
    else:  # a non-string value (e.g. a dict) is formatted, not passed to str.join as is
        default = "Trained on a narrow task; not evaluated outside it."
        lines.append(_format_value(limits) if limits else default)
    lines.append("")
    others = {k: v for k, v in card.items()
              if k not in {"name", "description", "data", "teacher", "losses", "training", "limits"}}
    if others:
        lines += ["## Other details", ""]
        lines += [f"- {k}: {_format_value(v)}" for k, v in sorted(others.items())]
        lines.append("")
    return "\n".join(lines)
