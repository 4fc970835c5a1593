"""Every teacher source gives the same KD targets for the same weights: a tiny teacher saved as a Distillery
artifact and as a Hugging Face directory, served over HTTP, and cached; plus tokenizer safety and
sequence-level KD across tokenizers, and a short KD run on the cache."""

from __future__ import annotations

import dataclasses
import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config

from training.artifact import UnverifiedArtifactWarning
from training.data import Example, collate, encode_example, read_examples
from training.kd.trainer import KDTrainer
from training.model import Student
from training.model_config import ModelConfig
from training.teachers.base import VocabularyMismatchError, ensure_same_vocabulary
from training.teachers.cache_builder import CacheSettings, build_topk_cache
from training.teachers.cache_teacher import CacheTeacher
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.config import TeacherSection
from training.teachers.factory import build_teacher
from training.teachers.generate import generate_completions
from training.teachers.hf import HFTeacher
from training.teachers.http_client import OpenAIClient, RetryPolicy
from training.teachers.http_teacher import HttpTeacher
from training.teachers.local import GenerationParams
from training.teachers.server import TeacherEngine, TeacherServer
from training.teachers.teacher_tokenizer import ForeignTokenizer
from training.tokenizer import DistilleryTokenizer

transformers = pytest.importorskip("transformers")

K = 24


@pytest.fixture(scope="module")
def dirs(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> dict[str, Path]:
    """The same weights as a Distillery artifact and as a transformers-written HF directory."""
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(11)
    Student(dataclasses.replace(tiny_config, initializer_range=0.2)).save_pretrained(
        root / "ckpt", tokenizer=tiny_tokenizer
    )
    hf = transformers.LlamaForCausalLM.from_pretrained(str(root / "ckpt"), local_files_only=True)
    hf.save_pretrained(str(root / "hf"))
    tiny_tokenizer.save(root / "hf")
    assert not (root / "hf" / "manifest.json").exists()
    records = [
        {"id": f"e{i}", "prompt": f"Q: {i * 13}+{i}=?", "completion": f"<answer>{i * 14}</answer>"}
        for i in range(8)
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"root": root, "ckpt": root / "ckpt", "hf": root / "hf", "data": root / "data.jsonl"}


@pytest.fixture(scope="module")
def ckpt(dirs: dict[str, Path]) -> CheckpointTeacher:
    teacher = build_teacher(TeacherSection(kind="checkpoint", path=str(dirs["ckpt"])))
    assert isinstance(teacher, CheckpointTeacher)
    return teacher


@pytest.fixture(scope="module")
def hf(dirs: dict[str, Path]) -> HFTeacher:
    teacher = build_teacher(TeacherSection(kind="hf", path=str(dirs["hf"])))
    assert isinstance(teacher, HFTeacher)
    return teacher


@pytest.fixture(scope="module")
def batch(dirs: dict[str, Path], tiny_tokenizer: DistilleryTokenizer) -> dict[str, torch.Tensor]:
    examples = [ex for _, ex in read_examples(dirs["data"])]
    return collate([encode_example(ex, tiny_tokenizer, 128, False) for ex in examples], tiny_tokenizer.pad_id)


@pytest.fixture(scope="module")
def server(hf: HFTeacher) -> Iterator[TeacherServer]:
    with TeacherServer(TeacherEngine(hf, "tiny-hf", max_logprobs=64)) as srv:
        yield srv


def _http(url: str, tokenizer: DistilleryTokenizer, cache_dir: Path | None = None) -> HttpTeacher:
    client = OpenAIClient(
        url, retry=RetryPolicy(3, 0.001, 0.01), concurrency=4, cache_dir=cache_dir, rng=random.Random(0)
    )
    return HttpTeacher(client, "tiny-hf", tokenizer, top_k=K)


def _topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, ids = torch.log_softmax(logits.double(), -1).topk(k, dim=-1)
    return ids, values


def _assert_same_topk(got_ids: torch.Tensor, got_lp: torch.Tensor, logits: torch.Tensor, tol: float,
                      name: str = "") -> None:
    """(N, K) top-k ids and log-probs from another computation path equal the reference's top-k, up to the
    order of near-ties: each id's reference log-prob equals the one given (within ``tol``), and the sorted
    values equal the reference's k largest. Two kernels may swap two ids whose log-probs differ by 1e-7."""
    logp = torch.log_softmax(logits.double(), -1)
    reference_of_got = logp.gather(-1, got_ids)
    assert (reference_of_got - got_lp.double()).abs().max() < tol, name
    want = logp.topk(got_ids.shape[-1], dim=-1).values
    assert (got_lp.double().sort(-1, descending=True).values - want).abs().max() < tol, name


def test_hf_dir_and_checkpoint_give_the_same_dense_logits(
    ckpt: CheckpointTeacher, hf: HFTeacher, batch: dict[str, torch.Tensor]
) -> None:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    a, b = ckpt.targets(ids, mask).logits, hf.targets(ids, mask).logits
    real = mask.bool()
    assert a is not None and b is not None and a.abs().max() > 1.0
    assert (a[real] - b[real]).abs().max() < 1e-4
    # left padding too (positions counted over real tokens)
    flipped_ids, flipped_mask = ids.flip(-1), mask.flip(-1)
    left = hf.logits(flipped_ids, flipped_mask)
    assert (
        left[flipped_mask.bool()] - ckpt.logits(flipped_ids, flipped_mask)[flipped_mask.bool()]
    ).abs().max() < 1e-4
    assert hf.tokenizer.fingerprint() == ckpt.tokenizer.fingerprint()
    ensure_same_vocabulary(hf, ckpt.tokenizer, ckpt.vocab_size)  # type: ignore[arg-type]


def test_server_topk_equals_checkpoint_topk(
    server: TeacherServer, ckpt: CheckpointTeacher, batch: dict[str, torch.Tensor]
) -> None:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    got = _http(server.url, ckpt.tokenizer).targets(ids, mask)
    want_ids, want_lp = _topk(ckpt.logits(ids, mask), K)
    real = mask.bool()
    _assert_same_topk(got.topk_ids[real], got.topk_logprobs[real], ckpt.logits(ids, mask)[real], 1e-4)
    assert (got.topk_ids[real] == want_ids[real]).float().mean() > 0.99  # only near-ties may swap
    assert want_lp.shape == got.topk_logprobs.shape


def test_http_section_builds_the_same_teacher(
    server: TeacherServer,
    ckpt: CheckpointTeacher,
    tmp_path: Path,
    batch: dict[str, torch.Tensor],
    dirs: dict[str, Path],
) -> None:
    section = TeacherSection(
        kind="http",
        url=server.url,
        model="tiny-hf",
        tokenizer=str(dirs["ckpt"]),
        top_k=K,
        response_cache=str(tmp_path / "responses"),
        backoff_s=0.01,
    )
    teacher = build_teacher(section)
    assert isinstance(teacher, HttpTeacher)
    ensure_same_vocabulary(teacher, ckpt.tokenizer, ckpt.vocab_size)  # type: ignore[arg-type]
    got = teacher.targets(batch["input_ids"][:2], batch["attention_mask"][:2])
    want_ids, _ = _topk(ckpt.logits(batch["input_ids"][:2], batch["attention_mask"][:2]), K)
    real = batch["attention_mask"][:2].bool()
    assert torch.equal(got.topk_ids[real], want_ids[real])


def test_caches_from_every_live_source_agree(
    server: TeacherServer,
    ckpt: CheckpointTeacher,
    hf: HFTeacher,
    dirs: dict[str, Path],
    tmp_path: Path,
    batch: dict[str, torch.Tensor],
) -> None:
    settings = CacheSettings(k=K, shard_size=3, batch_size=4)
    targets = {}
    for name, teacher in {"ckpt": ckpt, "hf": hf, "http": _http(server.url, ckpt.tokenizer)}.items():
        manifest = build_topk_cache(
            teacher,
            [dirs["data"]],
            tmp_path / name,
            settings,
            teacher_description={"source": name},
            progress=False,
        )
        assert manifest.complete and manifest.totals["entries"] == 8
        targets[name] = CacheTeacher(tmp_path / name).targets(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    want_ids, want_lp = _topk(ckpt.logits(batch["input_ids"], batch["attention_mask"]), K)
    logits = ckpt.logits(batch["input_ids"], batch["attention_mask"])[real]
    for name, got in targets.items():
        assert (got.topk_ids[real] == want_ids[real]).float().mean() > 0.99, name  # only near-ties may swap
        # each stored id carries its own probability, within the 8-bit quantization error (relative to the top-1)
        p = torch.log_softmax(logits.double(), -1).gather(-1, got.topk_ids[real]).exp()
        p_hat = got.topk_logprobs[real].double().exp()
        assert ((p - p_hat).abs() / want_lp[real][:, :1].exp()).max() < 0.02, name
    # the dense sources record the compression KL; the HTTP (sparse) one the bucket error only
    assert "kl_full_mean" in CacheTeacher(tmp_path / "hf").manifest.kl
    assert set(CacheTeacher(tmp_path / "http").manifest.kl) == {"kl_quantization_mean"}


@pytest.fixture(scope="module")
def foreign_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF Llama teacher whose tokenizer does not follow the Distillery contract (<s>, </s>, <pad>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("foreign") / "hf"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Q: what is 7+3? A: ten. Hello there, teacher speaking."] * 50, trainer=trainer)
    wrapped = ForeignTokenizer(tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.save(root)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(2)
    transformers.LlamaForCausalLM(config).save_pretrained(str(root))
    return root


def test_foreign_tokenizer_is_refused_for_token_kd_but_generates_text(
    foreign_hf: Path, tmp_path: Path, tiny_tokenizer: DistilleryTokenizer
) -> None:
    teacher = build_teacher(TeacherSection(kind="hf", path=str(foreign_hf)))
    assert isinstance(teacher.tokenizer, ForeignTokenizer)
    with pytest.raises(VocabularyMismatchError) as info:
        ensure_same_vocabulary(teacher, tiny_tokenizer, tiny_tokenizer.vocab_size)
    assert "tokens only in the teacher" in str(info.value) and "'<s>'" in str(info.value)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"Q: what is {i}+3?"}) + "\n" for i in range(4))
    )
    out = tmp_path / "completions.jsonl"
    report = generate_completions(
        teacher,
        prompts,
        out,
        GenerationParams(max_new_tokens=8, temperature=0.8, seed=1),
        student_tokenizer=tiny_tokenizer,
        progress=False,
    )
    assert report.written == 4 and report.tokenizers_match is False
    examples = [ex for _, ex in read_examples(out)]
    assert any(ex.completion for ex in examples)
    for ex in examples:
        encoded = encode_example(ex, tiny_tokenizer, 512, False)
        assert tiny_tokenizer.decode(encoded.input_ids[1:-1]) == ex.prompt + ex.completion


def test_trainer_distills_from_the_cache(tmp_path: Path) -> None:
    """A short KD run with ``teacher: {kind: cache}``: the KD term is the sparse loss against the cache."""
    paths = make_tiny_setup(tmp_path / "setup", n_train=32, n_val=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedArtifactWarning)
        live = CheckpointTeacher(paths["teacher"])
    build_topk_cache(
        live,
        [paths["train"]],
        tmp_path / "cache",
        CacheSettings(k=16, max_length=64),
        teacher_description={"path": str(paths["teacher"])},
        progress=False,
    )
    section = TeacherSection(kind="cache", path=str(tmp_path / "cache"))
    cfg = tiny_config(
        paths,
        tmp_path / "run",
        teacher=section.model_dump(mode="json"),
        data={"val": []},
        eval={"generate_examples": 0, "every": 4},
        optim={"max_steps": 4, "warmup_steps": 1},
    )
    cache = build_teacher(cfg.teacher)  # type: ignore[arg-type]
    seen: list[dict[str, float]] = []

    class Record:
        def on_train_start(self, trainer: KDTrainer) -> None: ...
        def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
            seen.append(dict(terms))

        def on_eval(self, trainer: KDTrainer, metrics: dict[str, float]) -> None: ...
        def on_checkpoint(self, trainer: KDTrainer, path: Path) -> None: ...
        def on_train_end(self, trainer: KDTrainer, result: object) -> None: ...

    result = KDTrainer(cfg, teacher=cache, hooks=[Record()]).train()  # type: ignore[list-item]
    assert result.status == "completed" and len(seen) == 4
    assert all(0 < s["kd"] < 50 for s in seen)
    batch = collate(
        [
            encode_example(
                Example(id="x", prompt="zzz never seen", completion="y"), cache.tokenizer, 64, False
            )
        ],
        0,
    )
    with pytest.raises(LookupError, match="not in the top-k cache"):
        cache.targets(batch["input_ids"], batch["attention_mask"])
