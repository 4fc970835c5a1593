"""``/v1/chat/completions`` of a Hugging Face teacher whose tokenizer has its own start tokens and a ChatML
template: the server encodes the template's text as written (no second start token), so its greedy answer
equals ``transformers``' ``generate`` on ``apply_chat_template`` ids."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from training.teachers.http_client import OpenAIClient, RetryPolicy
from training.teachers.server import TeacherEngine, TeacherServer
from training.teachers.teacher_tokenizer import load_teacher_tokenizer

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "what is two plus two? two plus two is four",
    "you are a helpful assistant who answers briefly",
    "hello there, how are you today?",
] * 5
MESSAGES = [
    {"role": "system", "content": "you are a helpful assistant"},
    {"role": "user", "content": "what is two plus two?"},
]


def _save_chatml_tokenizer(directory: Path) -> Any:
    """A byte-level BPE with ChatML specials (bos ``<|im_start|>`` as SmolLM2), saved for transformers with
    ``add_bos_token`` and a ChatML ``chat_template`` in tokenizer_config.json."""
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(SENTENCES, trainer)
    bos = backend.token_to_id("<|im_start|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        add_bos_token=True,
    )
    fast.save_pretrained(str(directory))
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    # Starts plain text with bos (as Llama tokenizers do: post-processor and add_bos_token) and holds a
    # ChatML template that writes its own.
    config.update(add_bos_token=True, chat_template=CHATML)
    config_file.write_text(json.dumps(config, indent=2))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("chatml") / "teacher"
    fast = _save_chatml_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(3)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def hf_teacher(hf_dir: Path) -> Any:
    from training.teachers.factory import build_teacher
    from training.teachers.spec import parse_teacher_spec

    return build_teacher(parse_teacher_spec(f"hf:{hf_dir}"))


@pytest.fixture(scope="module", params=["as_built", "bos_tokenizer"])
def engine(request: pytest.FixtureRequest, hf_teacher: Any, hf_dir: Path) -> TeacherEngine:
    """The hf teacher as built, and the same model with the directory's tokenizer read by
    ``load_teacher_tokenizer`` (which starts plain text with bos, per ``add_bos_token``): a second start
    token before the template's own would show in that one."""
    teacher = hf_teacher
    if request.param == "bos_tokenizer":
        teacher = copy.copy(hf_teacher)
        teacher.tokenizer = load_teacher_tokenizer(hf_dir)
        assert teacher.tokenizer.encode("hi", add_bos=True)[0] == teacher.tokenizer.bos_id
    return TeacherEngine(teacher, "chatml")


@pytest.fixture(scope="module")
def server(engine: TeacherEngine) -> Iterator[TeacherServer]:
    with TeacherServer(engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(hf_dir: Path) -> tuple[list[int], list[int], str]:
    """-> (prompt ids, greedy new ids without eos, their text) straight from transformers (12 new tokens)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast.from_pretrained(str(hf_dir), local_files_only=True)
    encoded = fast.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    ids = list(encoded["input_ids"] if not isinstance(encoded, list) else encoded)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True).eval()
    x = torch.tensor([ids])
    out = model.generate(
        x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=12
    )[0, len(ids) :].tolist()
    if fast.eos_token_id in out:
        out = out[: out.index(fast.eos_token_id)]
    return ids, out, fast.decode(out)


def test_chat_answer_equals_transformers_generate(
    server: TeacherServer, reference: tuple[list[int], list[int], str]
) -> None:
    ids, new, text = reference
    assert ids.count(ids[0]) == len(MESSAGES) + 1  # the template's own <|im_start|>, one per turn
    client = OpenAIClient(server.url, retry=RetryPolicy(0, 0.01, 0.01), rng=random.Random(0))
    answer = client.post(
        "/chat/completions",
        {"model": "chatml", "messages": MESSAGES, "max_tokens": 12, "temperature": 0},
        use_cache=False,
    )
    assert answer["usage"]["prompt_tokens"] == len(ids)
    assert answer["usage"]["completion_tokens"] == len(new)
    assert answer["choices"][0]["message"]["content"] == text
    assert answer["choices"][0]["finish_reason"] == ("length" if len(new) == 12 else "stop")


def test_chat_prompt_ids_are_the_template_ids(
    engine: TeacherEngine, reference: tuple[list[int], list[int], str]
) -> None:
    assert engine.chat_prompt_ids(MESSAGES) == reference[0]
