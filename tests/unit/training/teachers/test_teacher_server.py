"""The OpenAI-compatible teacher server (in a thread on 127.0.0.1) and the HTTP teacher that reads it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.generation import generate
from training.model import Student
from training.model_config import ModelConfig
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.http_client import OpenAIClient, RetryPolicy, TeacherHTTPError
from training.teachers.http_teacher import HttpTeacher, TeacherResponseError
from training.teachers.local import GenerationParams
from training.teachers.server import FaultPlan, TeacherEngine, TeacherServer
from training.teachers.token_mapping import TokenMappingError
from training.tokenizer import DistilleryTokenizer

FAST = RetryPolicy(max_retries=4, backoff_s=0.001, backoff_max_s=0.01)
KEY = "sk-server-test-0badc0de"


@pytest.fixture(scope="module")
def teacher(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> CheckpointTeacher:
    torch.manual_seed(5)
    out = tmp_path_factory.mktemp("server") / "teacher"
    Student(dataclasses.replace(tiny_config, initializer_range=0.2)).save_pretrained(
        out, tokenizer=tiny_tokenizer
    )
    return CheckpointTeacher(out)


@pytest.fixture
def server(teacher: CheckpointTeacher) -> Iterator[TeacherServer]:
    with TeacherServer(TeacherEngine(teacher, "tiny", max_logprobs=40)) as srv:
        yield srv


def _client(url: str, **kw) -> OpenAIClient:
    return OpenAIClient(url, retry=FAST, sleep=lambda s: None, rng=random.Random(0), **kw)


def _batch(tokenizer: DistilleryTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [
        tokenizer.encode("Q: 7+3*2-4=?\n<think>", add_bos=True),
        tokenizer.encode("Will it rain", add_bos=True),
    ]
    width = max(map(len, rows))
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
    return ids, mask


def test_models_lists_the_teacher_with_its_tokenizer(
    server: TeacherServer, teacher: CheckpointTeacher
) -> None:
    listing = _client(server.url).get("/models")
    (entry,) = listing["data"]
    assert entry["id"] == "tiny"
    assert entry["distillery"]["tokenizer_fingerprint"] == teacher.tokenizer.fingerprint()
    assert entry["distillery"]["vocab_size"] == teacher.vocab_size


def test_http_targets_equal_teacher_topk(server: TeacherServer, teacher: CheckpointTeacher) -> None:
    http = HttpTeacher(_client(server.url, concurrency=2), "tiny", teacher.tokenizer, top_k=24)
    ids, mask = _batch(teacher.tokenizer)
    got = http.targets(ids, mask)
    logp = torch.log_softmax(teacher.logits(ids, mask).double(), -1)
    values, top = logp.topk(24, dim=-1)
    real = mask.bool()
    assert torch.equal(got.topk_ids[real], top[real])
    assert (got.topk_logprobs[real].double() - values[real]).abs().max() < 1e-4
    assert torch.isneginf(got.topk_logprobs[~real]).all()
    with pytest.raises(NotImplementedError, match="targets"):
        http.logits(ids, mask)


def test_echo_logprobs_layout(server: TeacherServer, teacher: CheckpointTeacher) -> None:
    ids = teacher.tokenizer.encode("Q: 5-1=?", add_bos=True)
    body = {
        "model": "tiny",
        "prompt": ids,
        "echo": True,
        "max_tokens": 0,
        "logprobs": 3,
        "return_tokens_as_token_ids": True,
    }
    lp = _client(server.url).post("/completions", body)["choices"][0]["logprobs"]
    assert lp["tokens"] == [f"token_id:{i}" for i in ids]
    assert lp["top_logprobs"][0] is None and lp["token_logprobs"][0] is None
    assert len(lp["top_logprobs"]) == len(ids) and all(len(e) == 3 for e in lp["top_logprobs"][1:])
    full = torch.log_softmax(teacher.logits(torch.tensor([ids])).double(), -1)[0]
    assert abs(lp["token_logprobs"][2] - float(full[1, ids[2]])) < 1e-5
    text_answer = _client(server.url).post("/completions", {**body, "return_tokens_as_token_ids": False})
    assert "".join(text_answer["choices"][0]["logprobs"]["tokens"]) == teacher.tokenizer.decode(ids)


def test_greedy_generation_matches_distillery_generate(
    server: TeacherServer, teacher: CheckpointTeacher
) -> None:
    tok = teacher.tokenizer
    prompt = "Q: 7+3*2-4=?\n"
    answer = _client(server.url).post(
        "/completions", {"model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 0}
    )
    ids = torch.tensor([tok.encode(prompt, add_bos=True)])
    want = generate(teacher.model, ids, max_new_tokens=12, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)[
        0
    ]
    new = want[ids.shape[1] :].tolist()
    if tok.eos_id in new:
        new = new[: new.index(tok.eos_id)]
    choice = answer["choices"][0]
    assert choice["text"] == tok.decode(new)
    assert (
        answer["usage"]["completion_tokens"] == len(new) and answer["usage"]["prompt_tokens"] == ids.shape[1]
    )
    chat = _client(server.url).post(
        "/chat/completions",
        {
            "model": "tiny",
            "max_tokens": 12,
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        },
    )
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": choice["text"]}


def test_seeded_sampling_is_reproducible_and_stop_cuts_text(server: TeacherServer) -> None:
    client = _client(server.url)
    body = {"model": "tiny", "prompt": ["Will it", "Q: 1+1"], "max_tokens": 10, "temperature": 1.0, "seed": 7}
    a, b = (
        client.post("/completions", body, use_cache=False),
        client.post("/completions", body, use_cache=False),
    )
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1]
    text = a["choices"][0]["text"]
    assert len(text) > 2
    stop = text[1:3]
    cut = client.post("/completions", {**body, "prompt": "Will it", "stop": [stop]}, use_cache=False)
    assert cut["choices"][0]["text"] == text[: text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "tiny", "prompt": [1, 2], "logprobs": 41}, "logprobs must be <= 40"),
        ({"model": "other", "prompt": "x"}, "not served here"),
        ({"model": "tiny", "prompt": "x", "n": 2}, "n must be 1"),
        ({"model": "tiny", "prompt": "x", "stream": True}, "stream"),
        ({"model": "tiny", "prompt": [1, 99999]}, "outside the vocabulary"),
        ({"model": "tiny", "prompt": []}, "empty"),
        ({"model": "tiny"}, "prompt"),
        ({"model": "tiny", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ],
)
def test_bad_requests_get_400_with_a_reason(server: TeacherServer, body: dict, message: str) -> None:
    with pytest.raises(TeacherHTTPError, match=message) as info:
        _client(server.url).post("/completions", body)
    assert info.value.status == 400


def test_unknown_route_is_404(server: TeacherServer) -> None:
    with pytest.raises(TeacherHTTPError) as info:
        _client(server.url).post("/embeddings", {"input": "x"})
    assert info.value.status == 404


def test_faults_are_survived_and_counted(server: TeacherServer, teacher: CheckpointTeacher) -> None:
    server.faults = FaultPlan(["429", "drop", "503"])
    http = HttpTeacher(_client(server.url, concurrency=1), "tiny", teacher.tokenizer, top_k=4)
    ids, mask = _batch(teacher.tokenizer)
    got = http.targets(ids, mask)
    assert torch.isfinite(got.topk_logprobs[mask.bool()]).all()
    stats = server.stats.snapshot()
    assert stats["faults"] == {"429": 1, "drop": 1, "503": 1}
    assert stats["posts"] == 2 + 3 and stats["completed"] == 2
    assert http.client.stats["retries"] == 3


def test_api_key_is_required_when_configured(
    teacher: CheckpointTeacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TeacherServer(TeacherEngine(teacher, "tiny"), api_key=KEY) as srv:
        monkeypatch.delenv("DISTILLERY_TEACHER_API_KEY", raising=False)
        with pytest.raises(TeacherHTTPError, match="invalid or missing API key") as info:
            _client(srv.url).get("/models")
        assert info.value.status == 401
        monkeypatch.setenv("DISTILLERY_TEACHER_API_KEY", KEY)
        assert _client(srv.url).get("/models")["data"][0]["id"] == "tiny"


def test_http_teacher_checks_model_and_tokenizer(server: TeacherServer, teacher: CheckpointTeacher) -> None:
    with pytest.raises(TeacherResponseError, match="not 'nope'"):
        HttpTeacher(_client(server.url), "nope", teacher.tokenizer)
    other = DistilleryTokenizer.train(["completely different text corpus"] * 30, vocab_size=300)
    with pytest.raises(TeacherResponseError, match="tokenizer"):
        HttpTeacher(_client(server.url), "tiny", other)


def test_text_token_format_refuses_tokens_that_do_not_round_trip(
    server: TeacherServer, teacher: CheckpointTeacher
) -> None:
    http = HttpTeacher(_client(server.url), "tiny", teacher.tokenizer, top_k=40, token_format="text")
    ids, mask = _batch(teacher.tokenizer)
    with pytest.raises((TokenMappingError, TeacherResponseError)):
        http.targets(ids, mask)


def test_http_teacher_generates_text(server: TeacherServer, teacher: CheckpointTeacher) -> None:
    for endpoint in ("chat", "completions"):
        http = HttpTeacher(_client(server.url), "tiny", teacher.tokenizer, text_endpoint=endpoint)
        texts = http.generate_texts(["Q: 7+3=?", "Will it"], GenerationParams(max_new_tokens=6))
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_stats_endpoint(server: TeacherServer) -> None:
    _client(server.url).post("/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1})
    stats = _client(f"http://127.0.0.1:{server.port}").get("/distillery/stats")
    assert stats["completed"] == 1 and stats["distinct_prompts"] == 1 and stats["posts"] == 1


def test_engine_rejects_chat_logprobs(server: TeacherServer) -> None:
    with pytest.raises(TeacherHTTPError, match="not supported"):
        _client(server.url).post(
            "/chat/completions",
            {"model": "tiny", "logprobs": True, "messages": [{"role": "user", "content": "x"}]},
        )


def test_server_binds_loopback_by_default(teacher: CheckpointTeacher) -> None:
    srv = TeacherServer(TeacherEngine(teacher, "tiny"))
    try:
        assert srv.host == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
    finally:
        srv.close()


def test_server_cli_refusals(
    teacher: CheckpointTeacher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.teacher_server import main

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text('{"format": "distillery-topk-cache"}')
    assert main([str(tmp_path / "cache"), "--port", "0"]) == 2
    assert "runs checkpoint or hf" in capsys.readouterr().err
    monkeypatch.delenv("EMPTY_KEY_VAR", raising=False)
    assert main([str(teacher.directory), "--port", "0", "--api-key-env", "EMPTY_KEY_VAR"]) == 2
    assert "EMPTY_KEY_VAR" in capsys.readouterr().err
