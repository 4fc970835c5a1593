"""The ``teacher`` section of a KD config: which source gives the teacher targets (see
:func:`training.teachers.factory.build_teacher`), validated per ``kind``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from training.config_base import FiniteStrictModel

_TEACHER_FIELDS: dict[str, frozenset[str]] = {
    "checkpoint": frozenset({"path", "dtype"}),
    "hf": frozenset({"path", "dtype", "allow_pickle"}),
    "http": frozenset({"url", "model", "tokenizer", "top_k", "token_format", "text_endpoint", "api_key_env",
                       "timeout_s", "max_retries", "backoff_s", "backoff_max_s", "concurrency",
                       "response_cache", "vocab_size"}),
    "cache": frozenset({"path", "temperature"}),
}
_TEACHER_REQUIRED: dict[str, tuple[str, ...]] = {
    "checkpoint": ("path",), "hf": ("path",), "http": ("url", "model", "tokenizer"), "cache": ("path",),
}


class TeacherSection(FiniteStrictModel):
    """Where teacher targets come from, chosen by ``kind`` (see :func:`training.teachers.factory.build_teacher`).

    * ``checkpoint``: a Distillery artifact (or HF Llama directory) run in-process: ``path``.
    * ``hf``: a local Hugging Face causal-LM directory (``AutoModelForCausalLM``, from disk only): ``path``.
    * ``http``: an OpenAI-compatible server (``url`` such as ``http://127.0.0.1:8000/v1``, ``model``, and
      ``tokenizer``, the directory of the served model's tokenizer); sparse top-``top_k`` targets.
    * ``cache``: a precomputed top-k cache (``python -m training.teacher_cache``): ``path``.

    A field that does not apply to the chosen kind is an error. Serialized (and so fingerprinted and locked
    on resume), a section holds ``kind``, its required fields and the fields that differ from their defaults.
    """

    kind: Literal["checkpoint", "hf", "http", "cache"] = Field(
        "checkpoint", description="where teacher targets come from: checkpoint (artifact run in-process), hf (local "
                                  "Hugging Face causal LM), http (OpenAI-compatible server, sparse top-k), cache "
                                  "(precomputed top-k cache)")
    path: str | None = Field(None, description="checkpoint / hf / cache directory")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="checkpoint / hf weights")
    allow_pickle: bool = Field(False, description="hf: also load pickle-format weights (pytorch_model.bin), "
                                                  "which can run code from the file; safetensors only if false")
    url: str | None = Field(None, description="http: base URL of the OpenAI-compatible API, ending in /v1")
    model: str | None = Field(None, description="http: model name sent with every request")
    tokenizer: str | None = Field(None, description="http: directory with the served model's tokenizer.json")
    top_k: int = Field(20, ge=1, description="http: top log-probs requested per position")
    token_format: Literal["token_id", "vocab", "text"] = Field(
        "token_id", description="http: how the server names tokens (token_id:N, vocabulary string, or text)")
    text_endpoint: Literal["chat", "completions"] = Field("chat", description="http: endpoint for text")
    api_key_env: str = Field("DISTILLERY_TEACHER_API_KEY", min_length=1,
                             description="http: environment variable holding the API key (never logged)")
    timeout_s: float = Field(60.0, gt=0, description="http: per-request socket timeout")
    max_retries: int = Field(6, ge=0, description="http: retries on 429/5xx/dropped connections/timeouts")
    backoff_s: float = Field(0.5, gt=0, description="http: first backoff; doubles per retry, with jitter")
    backoff_max_s: float = Field(30.0, gt=0, description="http: longest wait between retries, seconds")
    concurrency: int = Field(4, ge=1, description="http: requests in flight at most")
    response_cache: str | None = Field(None, description="http: directory of cached responses (resumable)")
    vocab_size: int | None = Field(None, gt=0, description="http: vocab size (default: the tokenizer's)")
    temperature: float = Field(1.0, gt=0, description="cache: the temperature the cache was built at")

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> TeacherSection:
        allowed = _TEACHER_FIELDS[self.kind]
        stray = sorted(f for f in self.model_fields_set if f != "kind" and f not in allowed)
        if stray:
            raise ValueError(f"teacher.kind={self.kind!r} does not use {stray}; it takes {sorted(allowed)}")
        missing = [f for f in _TEACHER_REQUIRED[self.kind] if getattr(self, f) in (None, "")]
        if missing:
            raise ValueError(f"teacher.kind={self.kind!r} needs {missing}")
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        keep = set(_TEACHER_REQUIRED[self.kind]) | {"kind"}
        defaults = {name: field.default for name, field in type(self).model_fields.items()}
        return {k: v for k, v in data.items()
                if k in keep or (k in _TEACHER_FIELDS[self.kind] and getattr(self, k) != defaults[k])}

    def describe(self) -> str:
        """One line naming the source, for logs and model cards (never a credential)."""
        if self.kind == "http":
            return f"http {self.url} model={self.model}"
        return f"{self.kind} {self.path}"
