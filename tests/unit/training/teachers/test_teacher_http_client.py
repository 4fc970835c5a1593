"""The OpenAI-compatible client: backoff, retries on 429/5xx/drops/timeouts, response cache, token mapping,
API-key hygiene. Runs against small scripted servers on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.teachers.http_client import OpenAIClient, RetryPolicy, TeacherHTTPError
from training.teachers.response_cache import ResponseCache, request_key
from training.teachers.token_mapping import TokenMapper, TokenMappingError
from training.tokenizer import DistilleryTokenizer

SECRET = "sk-test-3f9a1c0ffee5ecret"
FAST = RetryPolicy(max_retries=4, backoff_s=0.001, backoff_max_s=0.01)


class Script:
    """What the scripted server answers, request by request: (status, body) or 'drop' / ('stall', s)."""

    def __init__(self, steps: list, default: tuple[int, dict] = (200, {"ok": True})) -> None:
        self.steps = list(steps)
        self.default = default
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0


@contextmanager
def scripted(script: Script) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with script.lock:
                script.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(body) if body else None,
                    }
                )
                step = script.steps.pop(0) if script.steps else script.default
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            counted = True
            try:
                if step == "drop":
                    import socket

                    with script.lock:
                        script.in_flight -= 1
                        counted = False
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(step, tuple) and step[0] == "stall":
                    time.sleep(step[1])
                    step = script.default
                if isinstance(step, tuple) and step[0] == "sleep-ok":
                    time.sleep(step[1])
                    step = script.default
                status, payload = step
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                with script.lock:  # done before the client can read the answer and send its next request
                    script.in_flight -= 1
                    counted = False
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                if counted:
                    with script.lock:
                        script.in_flight -= 1

        do_GET = _handle
        do_POST = _handle

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str, **kw) -> OpenAIClient:
    sleeps: list[float] = []
    client = OpenAIClient(
        url,
        retry=kw.pop("retry", FAST),
        sleep=sleeps.append,
        timeout_s=kw.pop("timeout_s", 5.0),
        rng=random.Random(0),
        **kw,
    )
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=8, backoff_s=0.5, backoff_max_s=4.0)
    rng = random.Random(1)
    waits = [[policy.delay(n, rng) for _ in range(200)] for n in range(5)]
    for n, ws in enumerate(waits):
        cap = min(4.0, 0.5 * 2**n)
        assert min(ws) >= cap / 2 and max(ws) <= cap
        assert len({round(w, 6) for w in ws}) > 150  # jittered, not a fixed schedule
    assert policy.delay(0, rng, retry_after=3.0) == 3.0
    assert policy.delay(0, rng, retry_after=100.0) == 4.0  # capped


@pytest.mark.parametrize(
    "fault",
    [
        (429, {"error": {"message": "slow down"}}),
        (503, {"error": "busy"}),
        "drop",
        (500, b"<html>oops</html>"),
    ],
)
def test_retries_then_succeeds(fault: object) -> None:
    script = Script([fault, fault])
    with scripted(script) as url:
        client = _client(url)
        assert client.post("/completions", {"prompt": [1]}) == {"ok": True}
    assert len(script.requests) == 3 and client.stats["retries"] == 2
    assert len(client.sleeps) == 2  # type: ignore[attr-defined]


def test_timeout_is_retried() -> None:
    script = Script([("stall", 0.6)])
    with scripted(script) as url:
        client = _client(url, timeout_s=0.2)
        assert client.post("/completions", {"prompt": [1]}) == {"ok": True}
    assert client.stats["retries"] == 1


def test_gives_up_after_max_retries_naming_the_last_error() -> None:
    script = Script([(503, {"error": {"message": "overloaded"}})] * 10)
    with scripted(script) as url:
        client = _client(url)
        with pytest.raises(
            TeacherHTTPError, match="after 5 attempts; last error: HTTP 503: overloaded"
        ) as info:
            client.post("/completions", {"prompt": [1]})
    assert info.value.status == 503 and len(script.requests) == 5


def test_client_errors_fail_at_once() -> None:
    script = Script([(400, {"error": {"message": "logprobs must be <= 20"}})])
    with (
        scripted(script) as url,
        pytest.raises(TeacherHTTPError, match="HTTP 400: logprobs must be <= 20") as info,
    ):
        _client(url).post("/completions", {"prompt": [1]})
    assert info.value.status == 400 and len(script.requests) == 1


def test_response_cache_skips_finished_requests(tmp_path: Path) -> None:
    script = Script([])
    with scripted(script) as url:
        client = _client(url, cache_dir=tmp_path / "cache")
        for prompt in ([1], [2], [1]):
            client.post("/completions", {"model": "m", "prompt": prompt})
        assert len(script.requests) == 2 and client.stats["cache_hits"] == 1
        again = _client(url, cache_dir=tmp_path / "cache")  # a new process resuming the collection
        again.post("/completions", {"model": "m", "prompt": [2]})
        again.post("/completions", {"model": "m", "prompt": [2], "max_tokens": 3})  # other params: new key
    assert len(script.requests) == 3


def test_response_cache_is_atomic_and_tolerates_corrupt_files(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = request_key("/completions", {"prompt": [1]})
    assert (
        request_key("/completions", {"prompt": [1]})
        == key
        != request_key("/chat/completions", {"prompt": [1]})
    )
    path = cache.put(key, "/completions", {"a": 1})
    assert path.parent.name == key[:2] and cache.get(key) == {"a": 1}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    path.write_text('{"response": {"a": ')  # torn write from another tool
    assert cache.get(key) is None
    assert len(cache) == 1


def test_api_key_is_sent_but_never_logged_cached_or_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    echo = {"error": {"message": f"bad header Authorization: Bearer {SECRET}"}}
    script = Script([(503, echo), (200, {"ok": True}), (401, echo)])
    caplog.set_level(logging.DEBUG)
    with scripted(script) as url:
        client = _client(url, api_key_env="MY_TEACHER_KEY", cache_dir=tmp_path / "cache")
        client.post("/completions", {"model": "m", "prompt": [1]})
        with pytest.raises(TeacherHTTPError) as info:
            client.post("/completions", {"model": "m", "prompt": [2]})
    assert script.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(info.value) and "[REDACTED]" in str(info.value)
    assert SECRET not in caplog.text and "retry 1/4" in caplog.text
    assert SECRET not in repr(client)
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()


def test_no_key_means_no_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILLERY_TEACHER_API_KEY", raising=False)
    script = Script([])
    with scripted(script) as url:
        _client(url).get("/models")
    assert "Authorization" not in script.requests[0]["headers"]


def test_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        OpenAIClient("http://user:pw@127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http://host:port/v1"):
        OpenAIClient("ftp://127.0.0.1/v1")


def test_concurrency_limit_holds_across_threads() -> None:
    script = Script([("sleep-ok", 0.15)] * 8)
    with scripted(script) as url:
        client = _client(url, concurrency=3)
        results = client.map(
            lambda i: client.post("/completions", {"prompt": [i]}, use_cache=False), list(range(8))
        )
    assert results == [{"ok": True}] * 8
    assert 2 <= script.max_in_flight <= 3


def test_map_raises_the_first_error() -> None:
    client = OpenAIClient("http://127.0.0.1:9/v1", concurrency=2)

    def boom(i: int) -> int:
        if i == 1:
            raise RuntimeError("boom")
        return i

    with pytest.raises(RuntimeError, match="boom"):
        client.map(boom, [0, 1, 2, 3])


def test_token_mapper_formats(tiny_tokenizer: DistilleryTokenizer) -> None:
    ids = tiny_tokenizer.encode("Q: 7+3 <think> the quick")
    vocab_names = {v: k for k, v in tiny_tokenizer.vocab().items()}
    by_id = TokenMapper(tiny_tokenizer, "token_id")
    by_vocab = TokenMapper(tiny_tokenizer, "vocab")
    by_text = TokenMapper(tiny_tokenizer, "text")
    for i in ids:
        assert by_id.to_id(f"token_id:{i}") == i
        assert by_vocab.to_id(vocab_names[i]) == i
        assert by_text.to_id(tiny_tokenizer.decode([i])) == i
    with pytest.raises(TokenMappingError, match="return_tokens_as_token_ids"):
        by_id.to_id(" the")
    with pytest.raises(TokenMappingError, match="outside the teacher vocabulary"):
        by_id.to_id(f"token_id:{tiny_tokenizer.vocab_size}")
    with pytest.raises(TokenMappingError, match="not in the teacher vocabulary"):
        by_vocab.to_id("no-such-token")


def test_token_mapper_refuses_text_that_does_not_round_trip(tiny_tokenizer: DistilleryTokenizer) -> None:
    mapper = TokenMapper(tiny_tokenizer, "text")
    with pytest.raises(TokenMappingError, match="round-trip"):
        mapper.to_id("\ufffd")  # a partial UTF-8 byte decodes to the replacement character
    with pytest.raises(TokenMappingError, match="round-trip"):
        mapper.to_id("zqxjkvw")  # several tokens
