"""Tokenizers: any Hugging Face fast tokenizer, and the byte-level BPE ones Distillery trains for its tasks.

The contract (DESIGN.md): teacher and student tokenizers are identical (same :meth:`fingerprint`); the roles
bos/eos/pad/unk come from the tokenizer's own ``tokenizer_config.json``. Only tokenizers Distillery trains
(:meth:`DistilleryTokenizer.train`) put their special tokens at the fixed ids 0..14 of
:data:`SPECIAL_TOKENS` (reasoning markers included, which the bundled tasks rely on). Files written are
``tokenizer.json`` and ``tokenizer_config.json``, loadable by
``transformers.PreTrainedTokenizerFast.from_pretrained(dir)`` with identical ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from training.chat_template import ChatTemplateError, render_chat_template, template_from_config

# The contract: token -> id. Never reorder; only append.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",  # 0 padding
    "<bos>",  # 1 beginning of sequence
    "<eos>",  # 2 end of sequence
    "<unk>",  # 3 unknown (byte-level BPE never needs it; kept for HF tooling)
    "<think>",  # 4 reasoning block start
    "</think>",  # 5 reasoning block end
    "<step>",  # 6 reasoning step start
    "</step>",  # 7 reasoning step end
    "<answer>",  # 8 answer start
    "</answer>",  # 9 answer end
    "<bot>",  # 10 begin of latent thought (Coconut)
    "<eot>",  # 11 end of latent thought
    "<latent>",  # 12 latent position placeholder
    "<tool_call>",  # 13 tool call start
    "</tool_call>",  # 14 tool call end
)
SPECIAL_IDS: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# Keys of a foreign tokenizer_config.json that point at files or code this artifact does not carry.
_DROPPED_CONFIG_KEYS = frozenset({"auto_map", "name_or_path", "tokenizer_file", "vocab_file", "merges_file"})


class TokenizerMismatchError(ValueError):
    """Two tokenizers (e.g. teacher and student) do not map text to the same ids."""


@dataclass(frozen=True)
class TokenRoles:
    """The special tokens a tokenizer gives each role (``None`` where it has none), as its
    ``tokenizer_config.json`` names them. ``pad`` is ``None`` when padding falls back to ``eos``."""

    bos: str | None = None
    eos: str | None = None
    pad: str | None = None
    unk: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TokenRoles:
        return cls(*(_token_text(config.get(f"{role}_token")) for role in ("bos", "eos", "pad", "unk")))


NATIVE_ROLES = TokenRoles(bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>")


class DistilleryTokenizer:
    """A typed wrapper over a ``tokenizers.Tokenizer``: Distillery's own tokenizers or any Hugging Face one.

    With ``roles=None`` the tokenizer must follow Distillery's fixed-id contract (:data:`SPECIAL_TOKENS` at ids
    0..14; what :meth:`train` produces). With ``roles`` it is a foreign (Hugging Face) tokenizer whose
    bos/eos/pad/unk come from its own ``tokenizer_config.json``; with no pad token, padding uses eos, as
    ``transformers`` does, and the saved ``tokenizer_config.json`` records that (``pad_token`` = eos).

    ``encode(text, add_bos=True)`` means "this text starts a sequence": the bos id is prepended when the
    tokenizer adds one at the start of a sequence (always for Distillery's; per ``add_bos_token`` or the
    tokenizer's post-processor for a foreign one). Chat templates write their own start tokens, so text
    rendered by :meth:`apply_chat_template` is encoded without ``add_bos``.
    """

    def __init__(self, tokenizer: Tokenizer, model_max_length: int = 2048, *, roles: TokenRoles | None = None,
                 chat_template: str | None = None, add_bos: bool | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self._tok = tokenizer
        self.model_max_length = model_max_length
        self.chat_template = chat_template
        self._config = dict(config or {})
        if roles is None:
            for token, expected in SPECIAL_IDS.items():
                actual = tokenizer.token_to_id(token)
                if actual != expected:
                    raise TokenizerMismatchError(
                        f"special token {token!r} has id {actual}, the Distillery contract requires {expected}"
                    )
            self.roles, self.is_native = NATIVE_ROLES, True
            self.bos_id: int | None = BOS_ID
            self.eos_id: int = EOS_ID
            self.pad_id: int = PAD_ID
            self.unk_id: int | None = UNK_ID
            self.pad_is_eos = False
            self.adds_bos = True if add_bos is None else add_bos
            return
        self.roles, self.is_native = roles, False
        self.bos_id = self._role_id("bos", roles.bos)
        eos_id = self._role_id("eos", roles.eos)
        if eos_id is None:
            raise TokenizerMismatchError(
                "the tokenizer has no eos token (tokenizer_config.json 'eos_token'); a causal LM needs one to "
                "end its answers: set eos_token to the token that ends a turn")
        self.eos_id = eos_id
        self.unk_id = self._role_id("unk", roles.unk)
        pad_id = self._role_id("pad", roles.pad)
        self.pad_is_eos = pad_id is None
        self.pad_id = eos_id if pad_id is None else pad_id
        self.adds_bos = self._detect_adds_bos() if add_bos is None else (add_bos and self.bos_id is not None)

    def _role_id(self, role: str, token: str | None) -> int | None:
        if token is None:
            return None
        value = self._tok.token_to_id(token)
        if value is None:
            raise TokenizerMismatchError(
                f"tokenizer_config.json names {token!r} as the {role} token but it is not in tokenizer.json")
        return value

    def _detect_adds_bos(self) -> bool:
        """Whether ``transformers`` would start a sequence with bos: ``add_bos_token`` in the config, else
        whatever the tokenizer.json post-processor does."""
        if self.bos_id is None:
            return False
        flag = self._config.get("add_bos_token")
        if isinstance(flag, bool):
            return flag
        ids = self._tok.encode("a", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self.bos_id

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2,
              model_max_length: int = 2048) -> DistilleryTokenizer:
        """Train byte-level BPE on an iterator of texts; specials first, then the 256 byte symbols."""
        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte symbols plus "
                f"{len(SPECIAL_TOKENS)} special tokens"
            )
        tok = Tokenizer(models.BPE())
        # Digits are split one by one (as in Llama): numbers then tokenize consistently, which arithmetic
        # needs ("23" and "18" become the same kind of token sequence instead of arbitrary merges).
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_as_iterator(texts), trainer=trainer)
        return cls(tok, model_max_length)

    @classmethod
    def train_from_files(cls, paths: Iterable[str | Path], **kwargs: int) -> DistilleryTokenizer:
        """Train on text files (read line by line, never whole)."""

        def lines() -> Iterator[str]:
            for path in paths:
                with open(path, encoding="utf-8") as fh:
                    yield from fh

        return cls.train(lines(), **kwargs)

    @classmethod
    def load(cls, directory: str | Path) -> DistilleryTokenizer:
        """Load any Hugging Face tokenizer directory (``tokenizer.json`` + optional ``tokenizer_config.json``
        and ``chat_template.jinja``).

        A tokenizer that follows Distillery's contract (its special tokens at ids 0..14 and no other role
        tokens in its config) loads as a native one; any other loads with the roles its config names.
        """
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a tokenizer directory holds {TOKENIZER_FILE} "
                                    "(Hugging Face fast-tokenizer format)")
        config: dict[str, Any] = {}
        cfg_path = directory / TOKENIZER_CONFIG_FILE
        if cfg_path.is_file():
            loaded = json.loads(cfg_path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise TokenizerMismatchError(f"{cfg_path} must hold a JSON object, got {type(loaded).__name__}")
            config = loaded
        max_len = config.get("model_max_length")
        model_max_length = int(max_len) if isinstance(max_len, int | float) and max_len < 10**9 else 2048
        template = template_from_config(config)
        jinja_file = directory / CHAT_TEMPLATE_FILE
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        backend = Tokenizer.from_file(str(path))
        roles = TokenRoles.from_config(config)
        if _follows_contract(backend) and roles in (TokenRoles(), NATIVE_ROLES):
            return cls(backend, model_max_length, chat_template=template, config=config)
        return cls(backend, model_max_length, roles=roles, chat_template=template, config=config)

    def save(self, directory: str | Path) -> list[str]:
        """Write tokenizer.json and tokenizer_config.json; returns the file names written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / TOKENIZER_FILE))
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(self.hf_config(), indent=2) + "\n")
        return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]

    def hf_config(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` that ``PreTrainedTokenizerFast`` reads.

        A foreign tokenizer keeps its own config (roles, chat template, flags); a missing pad token is
        written as the eos token, which is what Distillery pads with.
        """
        if self.is_native:
            config: dict[str, Any] = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "additional_special_tokens": list(SPECIAL_TOKENS[4:]),
                "model_max_length": self.model_max_length,
                "clean_up_tokenization_spaces": False,
                "add_bos_token": False,
                "add_eos_token": False,
                "padding_side": "left",
            }
        else:
            config = {key: value for key, value in self._config.items() if key not in _DROPPED_CONFIG_KEYS}
            config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
            config["model_max_length"] = self.model_max_length
            for key, token in self.special_tokens().items():
                if token is not None and _token_text(config.get(key)) != token:
                    config[key] = token
            config.setdefault("clean_up_tokenization_spaces", False)
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        return config

    # ---- use ----------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def special_tokens(self) -> dict[str, str | None]:
        """Template variables ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token`` (None when absent)."""
        pad = self.roles.eos if self.pad_is_eos else self.roles.pad
        return {"bos_token": self.roles.bos, "eos_token": self.roles.eos, "pad_token": pad, "unk_token": self.roles.unk}

    def token_id(self, token: str) -> int:
        """Id of a single token (special or regular); raises KeyError when absent."""
        value = self._tok.token_to_id(token)
        if value is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return value

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in the text map to their ids. ``add_bos``: the text starts a
        sequence (bos is prepended when this tokenizer starts sequences with one); ``add_eos`` appends eos."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        head = [self.bos_id] if add_bos and self.adds_bos and self.bos_id is not None else []
        return head + ids + ([self.eos_id] if add_eos else [])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Text -> (ids, per-token ``(start, end)`` character offsets into ``text``), no special tokens added."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]  # type: ignore[misc]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Batch of texts -> lists of ids (no bos/eos), encoded in parallel by ``tokenizers``."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text; ``decode(encode(s)) == s`` for any unicode string."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
                            tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """Render an OpenAI-form conversation with this tokenizer's chat template (same text as
        ``transformers``' ``apply_chat_template(..., tokenize=False)``)."""
        if self.chat_template is None:
            raise ChatTemplateError(
                "this tokenizer has no chat template (tokenizer_config.json 'chat_template'); chat records "
                "('messages') need one: use prompt/completion records or a tokenizer with a template")
        return render_chat_template(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                                    special_tokens=self.special_tokens(), tools=tools)

    def fingerprint(self) -> str:
        """sha256 of the vocabulary, merges, added/special tokens and pre-tokenization: equal fingerprints
        mean equal ids."""
        roles = self.special_tokens()
        specials = list(SPECIAL_TOKENS) if self.is_native else [  # the pad actually used (eos when absent)
            t for t in (roles["bos_token"], roles["eos_token"], roles["pad_token"]) if t]
        return backend_fingerprint(self._tok, specials)

    def vocab(self) -> dict[str, int]:
        """token -> id, special tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok


def backend_fingerprint(backend: Tokenizer, specials: list[str]) -> str:
    """sha256 over vocabulary, merges, added tokens (ids, and how they match), role tokens, pre-tokenizer and
    normalizer: equal fingerprints mean equal ids."""
    state = json.loads(backend.to_str())
    model = state.get("model", {})
    added = sorted((state.get("added_tokens") or []), key=lambda t: t.get("id", -1))
    payload = json.dumps(
        {"vocab": model.get("vocab"), "merges": model.get("merges"), "specials": specials,
         "added": added, "pre": state.get("pre_tokenizer"), "norm": state.get("normalizer")},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _follows_contract(backend: Tokenizer) -> bool:
    return all(backend.token_to_id(token) == expected for token, expected in SPECIAL_IDS.items())


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def require_native(tokenizer: DistilleryTokenizer, feature: str) -> None:
    """Raise :class:`TokenizerMismatchError` unless ``tokenizer`` has Distillery's fixed special ids, which
    ``feature`` relies on (reasoning markers such as ``<step>`` or ``<bot>`` at ids 4..14)."""
    if getattr(tokenizer, "is_native", True) is False:
        raise TokenizerMismatchError(
            f"{feature} needs a Distillery-trained tokenizer (reasoning markers at fixed ids 0..14); this "
            "tokenizer has its own special tokens. Train one with DistilleryTokenizer.train or use a bundled task")


def check_tokenizers_match(teacher: DistilleryTokenizer, student: DistilleryTokenizer,
                           sample_limit: int = 5) -> None:
    """Raise :class:`TokenizerMismatchError` naming the differences unless both map text identically."""
    if teacher.fingerprint() == student.fingerprint():
        return
    problems: list[str] = []
    if teacher.vocab_size != student.vocab_size:
        problems.append(f"vocab size {teacher.vocab_size} (teacher) vs {student.vocab_size} (student)")
    tv, sv = teacher.vocab(), student.vocab()
    only_t = sorted(set(tv) - set(sv))
    only_s = sorted(set(sv) - set(tv))
    moved = sorted(t for t in set(tv) & set(sv) if tv[t] != sv[t])
    if only_t:
        problems.append(f"{len(only_t)} tokens only in the teacher, e.g. {only_t[:sample_limit]}")
    if only_s:
        problems.append(f"{len(only_s)} tokens only in the student, e.g. {only_s[:sample_limit]}")
    if moved:
        examples = [f"{t!r}: {tv[t]} vs {sv[t]}" for t in moved[:sample_limit]]
        problems.append(f"{len(moved)} tokens with different ids, e.g. {examples}")
    if not problems:
        problems.append("same vocabulary but different merges or pre-tokenization (texts split differently)")
    raise TokenizerMismatchError(
        "teacher and student tokenizers differ: " + "; ".join(problems)
        + ". Token-level KD needs identical tokenizers: train the student with the teacher's tokenizer, "
        "or choose a cross-tokenizer strategy (sequence-level KD on teacher-generated text)."
    )


def _as_iterator(texts: Iterable[str]) -> Iterator[str]:
    yield from texts
