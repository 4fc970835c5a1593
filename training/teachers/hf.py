"""A local Hugging Face causal-LM directory as a teacher, loaded from disk only.

The model comes from ``transformers.AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)`` (no
remote code, nothing downloaded), from safetensors weights only: a directory holding only pickle-format
weights (``pytorch_model.bin``, which can run code when loaded) is refused unless ``allow_pickle`` is set
(``teacher.allow_pickle: true``). Its tokenizer comes from ``PreTrainedTokenizerFast``; the tokenizer is
wrapped by :func:`~training.teachers.teacher_tokenizer.from_hf_tokenizer`, so
:func:`training.teachers.base.ensure_same_vocabulary` can compare it with the student's and name differences.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from training.teachers.base import TeacherTargets, VocabularyMismatchError
from training.teachers.teacher_tokenizer import TeacherTokenizer, from_hf_tokenizer
from training.user_errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class PickleWeightsRefused(UserError):
    """A Hugging Face directory holds only pickle-format weights and ``allow_pickle`` was not set."""


def weight_format(directory: Path) -> str:
    """``"safetensors"`` when ``directory`` holds safetensors weights (they win), ``"pickle"`` when it holds
    only pickle-format ones (``pytorch_model.bin``, ``*.pt`` ...), else ``"none"``."""
    if any(directory.glob("*.safetensors")) or (directory / "model.safetensors.index.json").is_file():
        return "safetensors"
    if any(p.suffix in PICKLE_SUFFIXES for p in directory.iterdir() if p.is_file()):
        return "pickle"
    return "none"


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) mask -> (B, T) positions counted over real tokens (left padding does not shift them)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class HFTeacher:
    """A frozen ``AutoModelForCausalLM`` from a local directory; dense targets (B, T, V)."""

    def __init__(self, directory: str | Path, dtype: torch.dtype = torch.float32, allow_pickle: bool = False) -> None:
        """Raises :class:`PickleWeightsRefused` for pickle-only weights unless ``allow_pickle``."""
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"Hugging Face teacher directory {self.directory} does not exist")
        pickled = weight_format(self.directory) == "pickle"
        if pickled and not allow_pickle:
            names = sorted(p.name for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
            raise PickleWeightsRefused(
                f"teacher {self.directory} holds pickle-format weights only ({', '.join(names[:3])}), and loading "
                "pickle can run code from the file; Distillery reads safetensors. Convert them to "
                "model.safetensors where you trust the file, or set teacher.allow_pickle: true "
                "(--teacher-opt allow_pickle=true) to load them anyway")
        self.model = AutoModelForCausalLM.from_pretrained(
            str(self.directory), local_files_only=True, dtype=dtype, use_safetensors=not pickled
        ).eval()
        self.model.requires_grad_(False)
        fast = PreTrainedTokenizerFast.from_pretrained(str(self.directory), local_files_only=True)
        self.tokenizer: TeacherTokenizer = from_hf_tokenizer(fast)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        if self.tokenizer.vocab_size > self.vocab_size:
            raise VocabularyMismatchError(
                f"teacher {self.directory}: tokenizer has {self.tokenizer.vocab_size} ids but the model's "
                f"output layer has {self.vocab_size}"
            )

    @torch.no_grad()
    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids (left or right padded) -> (B, T, V) float32 logits."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
        return out.logits.float()

    def targets(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TeacherTargets:
        """Dense targets: the full logits (B, T, V)."""
        return TeacherTargets(logits=self.logits(input_ids, attention_mask))

    @torch.no_grad()
    def generate_ids(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        eos_token_id: int | None,
        pad_token_id: int,
    ) -> Tensor:
        """Left-padded prompts (B, T) -> (B, T + n) prompt and continuation (``transformers`` generate)."""
        kwargs: dict[str, object] = {
            "do_sample": do_sample,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
        }
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
