"""The teacher server's bounds (issue 16): work per request fits the model's context and stops when the client
goes; bodies are capped; many clients can connect at once; half-sent requests time out; malformed
``Content-Length`` and lone surrogates get 400; the command refuses a missing or tampered directory in one
line. Real sockets on 127.0.0.1."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from training.model import Student
from training.model_config import ModelConfig
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.http_client import OpenAIClient, RetryPolicy, TeacherHTTPError
from training.teachers.server import MAX_BODY_BYTES, TeacherEngine, TeacherServer
from training.tokenizer import DistilleryTokenizer


class _NoEos:
    """A tokenizer that names no eos, so generation runs until ``max_tokens`` or the context ends."""

    eos_id = None

    def __init__(self, inner: DistilleryTokenizer) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _teacher(root: Path, config: ModelConfig, tokenizer: DistilleryTokenizer, context: int) -> Any:
    torch.manual_seed(11)
    out = root / f"teacher{context}"
    Student(dataclasses.replace(config, max_position_embeddings=context)).save_pretrained(
        out, tokenizer=tokenizer
    )
    teacher = copy.copy(CheckpointTeacher(out))
    teacher.tokenizer = _NoEos(teacher.tokenizer)
    return teacher


@pytest.fixture(scope="module")
def small(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> Any:
    """A teacher with a 32-token context that never stops at eos."""
    return _teacher(tmp_path_factory.mktemp("limits"), tiny_config, tiny_tokenizer, 32)


@pytest.fixture(scope="module")
def long(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> Any:
    """A teacher with a 4096-token context that never stops at eos (a long generation)."""
    return _teacher(tmp_path_factory.mktemp("limits"), tiny_config, tiny_tokenizer, 4096)


@pytest.fixture
def server(small: Any) -> Iterator[TeacherServer]:
    with TeacherServer(TeacherEngine(small, "small"), max_body_bytes=2000, read_timeout_s=0.5) as srv:
        yield srv


def _client(url: str) -> OpenAIClient:
    return OpenAIClient(url, retry=RetryPolicy(0, 0.01, 0.01), rng=random.Random(0))


def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int | None, bytes]:
    """Send ``data`` on a fresh connection, read until the server closes -> (status or None, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer:
        return None, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _wait(condition: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ---- bounded work -------------------------------------------------------------------------------------
def test_max_tokens_is_clamped_to_the_context(server: TeacherServer) -> None:
    client = _client(server.url)
    answer = client.post("/completions", {"model": "small", "prompt": "Q: 1+1=?", "max_tokens": 100,
                                          "temperature": 0}, use_cache=False)
    usage = answer["usage"]
    assert usage["total_tokens"] == 32 and answer["choices"][0]["finish_reason"] == "length"
    chat = client.post("/chat/completions", {"model": "small", "messages": [{"role": "user", "content": "hi"}],
                                             "temperature": 0}, use_cache=False)
    assert chat["usage"]["total_tokens"] == 32  # the default of 256 chat tokens, clamped


def test_prompt_longer_than_the_context_is_refused(server: TeacherServer) -> None:
    for prompt in ([5] * 33, "Will it rain " * 20):
        with pytest.raises(TeacherHTTPError, match="context is 32 tokens") as info:
            _client(server.url).post("/completions", {"model": "small", "prompt": prompt, "max_tokens": 0})
        assert info.value.status == 400
    echo = _client(server.url).post(
        "/completions", {"model": "small", "prompt": [5] * 32, "max_tokens": 1, "echo": True, "logprobs": 1}
    )
    assert len(echo["choices"][0]["logprobs"]["tokens"]) == 32  # a full context still scores


def test_generation_stops_when_the_client_disconnects(long: Any) -> None:
    with TeacherServer(TeacherEngine(long, "long")) as srv:
        body = json.dumps({"model": "long", "prompt": "Q: 1+1=?", "max_tokens": 3000, "temperature": 0})
        request = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(request)
            assert _wait(lambda: srv.stats.in_flight == 1, 5)
            time.sleep(0.3)
        assert _wait(lambda: srv.stats.in_flight == 0, 3), "the generation went on after the client left"
        assert srv.stats.snapshot()["cancelled"] == 1
        started = time.monotonic()
        answer = _client(srv.url).post("/completions", {"model": "long", "prompt": "x", "max_tokens": 2})
        assert answer["usage"]["completion_tokens"] == 2 and time.monotonic() - started < 5


# ---- bodies and headers -------------------------------------------------------------------------------
def test_body_over_the_limit_gets_413(server: TeacherServer) -> None:
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    status, body = _raw(server.port, head % 5000)  # declared only: the server must not wait for it
    assert status == 413 and b"at most 2000" in body
    status, body = _raw(server.port, head % 3000 + b"x" * 3000)  # sent: the answer still arrives
    assert status == 413
    assert MAX_BODY_BYTES == 4 << 20


@pytest.mark.parametrize("length", ["-1", "abc", "1e3"])
def test_malformed_content_length_gets_400_promptly(server: TeacherServer, length: str) -> None:
    started = time.monotonic()
    status, body = _raw(server.port, f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}"
                                     "\r\n\r\n{}".encode(), timeout=3)
    assert status == 400 and b"Content-Length" in body
    assert time.monotonic() - started < 2


def test_half_sent_requests_time_out(server: TeacherServer) -> None:
    started = time.monotonic()
    status, _ = _raw(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", timeout=3)
    assert status is None  # headers never ended: the connection is closed
    status, body = _raw(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                                     b'{"model"', timeout=3)
    assert status == 408 and b"8 of 100 bytes" in body
    assert time.monotonic() - started < 3


def test_many_clients_can_wait_to_be_accepted(small: Any) -> None:
    srv = TeacherServer(TeacherEngine(small, "small"))  # listening, not accepting yet
    sockets: list[socket.socket] = []
    try:
        for _ in range(40):
            sockets.append(socket.create_connection(("127.0.0.1", srv.port), timeout=1))
        srv.start()
        for sock in sockets:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for sock in sockets:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.0 200")
    finally:
        for sock in sockets:
            sock.close()
        srv.close()


# ---- text ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/completions", {"model": "small", "prompt": "a\ud800b", "max_tokens": 1}),
        ("/completions", {"model": "small", "prompt": ["ok", "\ud800"], "max_tokens": 1}),
        ("/chat/completions", {"model": "small", "messages": [{"role": "user", "content": "x\udfff"}]}),
    ],
)
def test_lone_surrogate_gets_400(server: TeacherServer, route: str, body: dict) -> None:
    with pytest.raises(TeacherHTTPError, match="lone UTF-16 surrogate") as info:
        _client(server.url).post(route, body)
    assert info.value.status == 400


# ---- the command --------------------------------------------------------------------------------------
def _tampered_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return target


def _broken_hf(target: Path) -> Path:
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "llama", "vocab_size": ')
    return target


@pytest.mark.parametrize("case", ["missing", "missing_hf", "tampered", "broken_hf"])
def test_cli_refuses_a_bad_teacher_in_one_line(
    case: str, small: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from training.teacher_server import main

    spec = {
        "missing": lambda: str(tmp_path / "nope"),
        "missing_hf": lambda: f"hf:{tmp_path / 'nope'}",
        "tampered": lambda: str(_tampered_artifact(small.directory, tmp_path / "t")),
        "broken_hf": lambda: str(_broken_hf(tmp_path / "h")),
    }[case]()
    assert main([spec, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_limits_flags() -> None:
    from training.teacher_server import build_parser

    args = build_parser().parse_args(["d", "--max-body-bytes", "1000", "--read-timeout", "2.5"])
    assert (args.max_body_bytes, args.read_timeout) == (1000, 2.5)
    defaults = build_parser().parse_args(["d"])
    assert (defaults.max_body_bytes, defaults.read_timeout) == (MAX_BODY_BYTES, 30.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["d", "--max-body-bytes", "0"])
