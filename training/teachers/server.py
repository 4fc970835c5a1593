"""An OpenAI-compatible HTTP server for a local teacher (Distillery checkpoint or Hugging Face directory).

Endpoints: ``GET /v1/models``; ``POST /v1/completions`` (text or token-id prompts, batch prompts, generation,
``echo``, ``logprobs`` up to ``max_logprobs``, ``stop``, ``seed``, and vLLM's ``return_tokens_as_token_ids``);
``POST /v1/chat/completions`` (text; messages rendered with the tokenizer's chat template, or joined by
newlines when it has none). Token strings in ``logprobs`` are the decoded text of each token (as OpenAI and
vLLM), or ``token_id:N`` when asked. ``/v1/models`` also states the vocabulary size and tokenizer fingerprint
(``"distillery": {...}``) so a client can check it holds the same tokenizer. ``GET /distillery/stats`` gives
request counters.

Text prompts are encoded with ``bos`` first (as Distillery models are trained); token-id prompts are used
as given. A chat rendered by the tokenizer's chat template is encoded as the template wrote it, with no
start token added (the template writes its own); a chat without a template is its contents joined by
newlines, encoded as a text prompt. Generation with ``temperature: 0`` is greedy.

Bounded work per request: a prompt longer than the model's context (``max_position_embeddings``) is refused
with HTTP 400; ``max_tokens`` is clamped so that prompt + completion fit the context (the answer then ends
with ``finish_reason: "length"``, as when ``max_tokens`` runs out; the chat default of 256 tokens is clamped
the same way). Generation stops when the client disconnects (checked before each forward pass of the model),
and the model lock is released at once. Bodies over ``max_body_bytes`` (default 4 MiB) get 413; a negative
or non-numeric ``Content-Length`` gets 400, a chunked body 411; a request whose headers or body do
not arrive within ``read_timeout_s`` is dropped (body: 408). Text holding a lone UTF-16 surrogate (JSON
``"\\ud800"``) gets 400.

Testing aid (never for production): a :class:`FaultPlan` makes the next POST requests fail in order:
``429`` (with ``Retry-After: 0``), ``500``/``502``/``503``/``504``, ``drop`` (the connection is closed
without an answer) or ``stall`` (the answer is delayed by ``stall_s``), so that clients' retry paths run
against a real server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import select
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.teachers.local import GenerationParams, generate_ids, sequence_logprobs
from training.teachers.teacher_tokenizer import render_chat

logger = logging.getLogger(__name__)

FAULTS = ("429", "500", "502", "503", "504", "drop", "stall")
MAX_BODY_BYTES = 4 << 20
"""Default cap on a request body (413 above it)."""
READ_TIMEOUT_S = 30.0
"""Default time a client has to send a request's headers (per read) and its whole body."""
REQUEST_QUEUE_SIZE = 128
"""Listen backlog: connections the kernel holds while every handler thread is busy accepting."""
DRAIN_S = 1.0
"""After refusing a body unread, how long the server keeps reading (and discarding) it so that the client
sees the answer rather than a connection reset."""

Cancelled = Callable[[], bool]
"""Asked before each forward pass of the model: True when the client has gone and the work should stop."""


class FaultPlan:
    """Testing aid: faults consumed in order by the next POST requests (thread-safe)."""

    def __init__(self, faults: Sequence[str] = (), stall_s: float = 2.0) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose from {FAULTS}")
        self._queue = deque(faults)
        self._lock = threading.Lock()
        self.stall_s = stall_s

    def next(self) -> str | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)


class ServerStats:
    """Request counters: POSTs received and answered, faults injected, most in flight, prompts served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.posts = 0
        self.completed = 0
        self.faults: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: Counter[str] = Counter()
        self.cancelled = 0

    def enter(self) -> None:
        with self._lock:
            self.posts += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def cancel(self) -> None:
        """Count a request abandoned because its client disconnected."""
        with self._lock:
            self.cancelled += 1

    def fault(self, name: str) -> None:
        with self._lock:
            self.faults[name] += 1

    def served(self, prompt: Any) -> None:
        key = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self.completed += 1
            self.prompts[key] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "posts": self.posts,
                "completed": self.completed,
                "faults": dict(self.faults),
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
                "cancelled": self.cancelled,
                "distinct_prompts": len(self.prompts),
                "repeated_prompts": sum(1 for n in self.prompts.values() if n > 1),
            }


class RequestError(ValueError):
    """A request the server refuses (HTTP 400) with a message for the client."""


class ClientGone(Exception):
    """The client disconnected while its request waited for or ran on the model: the work is abandoned."""


def require_unicode(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate such as JSON ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"{what} holds a lone UTF-16 surrogate {text[exc.start]!r} at character {exc.start}; "
            "text must be valid Unicode (surrogates only in escaped pairs)"
        ) from None


def context_length(teacher: Any) -> int | None:
    """The model's context in tokens (``max_position_embeddings`` of its config), or None when unknown."""
    config = getattr(getattr(teacher, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def input_embeddings(teacher: Any) -> torch.nn.Module | None:
    """The module every forward pass of the teacher's model starts with (where cancellation is checked)."""
    model = getattr(teacher, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            module = getter()
        except NotImplementedError:
            module = None
        if isinstance(module, torch.nn.Module):
            return module
    return next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)


class CompletionRequest(BaseModel):
    """``/v1/completions`` body (unknown fields are ignored, as OpenAI-compatible servers do)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    return_tokens_as_token_ids: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class ChatRequest(BaseModel):
    """``/v1/chat/completions`` body (text only; unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: bool = False


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]


class TeacherEngine:
    """Runs a dense local teacher for the API (one request at a time on the model).

    ``max_context`` (default: the model's ``max_position_embeddings``) bounds prompt + completion. The
    request methods take ``cancelled``, asked before each forward pass; when it answers True the work stops
    with :class:`ClientGone` and the model is free for the next request.
    """

    def __init__(
        self,
        teacher: Any,
        name: str,
        max_logprobs: int = 64,
        default_chat_tokens: int = 256,
        max_context: int | None = None,
    ) -> None:
        self.teacher = teacher
        self.name = name
        self.tokenizer = teacher.tokenizer
        self.vocab_size = int(teacher.vocab_size)
        self.max_logprobs = max_logprobs
        self.default_chat_tokens = default_chat_tokens
        self.max_context = max_context if max_context is not None else context_length(teacher)
        self._embeddings = input_embeddings(teacher)
        self._lock = threading.Lock()
        self.created = int(time.time())

    @contextmanager
    def _model_turn(self, cancelled: Cancelled | None) -> Iterator[None]:
        """Hold the model; with ``cancelled``, raise :class:`ClientGone` before any forward pass once it
        answers True (the lock is released as the exception leaves)."""
        with self._lock:
            if cancelled is None:
                yield
                return
            if cancelled():
                raise ClientGone

            def check(module: torch.nn.Module, args: Any) -> None:
                if cancelled():
                    raise ClientGone

            handle = self._embeddings.register_forward_pre_hook(check) if self._embeddings else None
            try:
                yield
            finally:
                if handle is not None:
                    handle.remove()

    def _budget(self, prompt_len: int, max_tokens: int | None) -> int:
        """New tokens allowed: ``max_tokens`` (None: the chat default) clamped to the room the context leaves;
        a prompt longer than the context is refused."""
        wanted = self.default_chat_tokens if max_tokens is None else max_tokens
        if self.max_context is None:
            return wanted
        if prompt_len > self.max_context:
            raise RequestError(
                f"the prompt has {prompt_len} tokens but this model's context is {self.max_context} tokens "
                "(max_position_embeddings): shorten the prompt"
            )
        return min(wanted, self.max_context - prompt_len)

    def models(self) -> dict[str, Any]:
        info = {
            "vocab_size": self.vocab_size,
            "tokenizer_fingerprint": self.tokenizer.fingerprint(),
            "max_logprobs": self.max_logprobs,
        }
        return {
            "object": "list",
            "data": [
                {
                    "id": self.name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "distillery",
                    "distillery": info,
                }
            ],
        }

    def _check_common(self, model: str | None, n: int, stream: bool) -> None:
        if model is not None and model != self.name:
            raise RequestError(f"model {model!r} is not served here; this server serves {self.name!r}")
        if n != 1:
            raise RequestError("n must be 1")
        if stream:
            raise RequestError("stream=true is not supported")

    def _prompt_ids(self, prompt: str | list[int], add_bos: bool = True) -> list[int]:
        if isinstance(prompt, str):
            require_unicode(prompt, "the prompt")
            ids = self.tokenizer.encode(prompt, add_bos=add_bos)
        else:
            ids = [int(i) for i in prompt]
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise RequestError(
                    f"prompt token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
                )
        if not ids:
            raise RequestError("the prompt is empty")
        return ids

    def _token_name(self, token_id: int, as_ids: bool) -> str:
        return f"token_id:{token_id}" if as_ids else self.tokenizer.decode([token_id])

    def _generate(
        self,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str],
        cancelled: Cancelled | None = None,
    ) -> tuple[list[int], str, str]:
        """-> (new ids, their text, finish reason)."""
        params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        with self._model_turn(cancelled):
            new, hit_eos = generate_ids(self.teacher, [ids], params)[0]
        text = self.tokenizer.decode(new)
        cuts = [text.find(s) for s in stop if s in text]
        if cuts:
            cut = min(cuts)
            text = text[:cut]
            keep = next(j for j in range(len(new) + 1) if len(self.tokenizer.decode(new[:j])) >= cut)
            return new[:keep], text, "stop"
        return new, text, "stop" if hit_eos else "length"

    def _logprobs(
        self,
        ids: list[int],
        new: list[int],
        echo: bool,
        top_n: int,
        as_ids: bool,
        cancelled: Cancelled | None = None,
    ) -> dict[str, Any]:
        with self._model_turn(cancelled):
            logp = sequence_logprobs(self.teacher, ids + new) if ids + new else None
        assert logp is not None
        k = min(top_n, self.vocab_size)
        top_values, top_ids = torch.topk(logp, k, dim=-1) if k else (None, None)
        returned = (ids if echo else []) + new
        first = 0 if echo else len(ids)
        tokens, token_lps, tops, offsets = [], [], [], []
        text_so_far = 0
        for i, token in enumerate(returned):
            position = first + i
            tokens.append(self._token_name(token, as_ids))
            offsets.append(text_so_far)
            text_so_far = len(self.tokenizer.decode(returned[: i + 1]))
            if position == 0:
                token_lps.append(None)
                tops.append(None)
                continue
            row = position - 1
            token_lps.append(float(logp[row, token]))
            entry: dict[str, float] = {}
            if top_values is not None and top_ids is not None:
                for value, tid in zip(top_values[row].tolist(), top_ids[row].tolist(), strict=True):
                    entry.setdefault(self._token_name(tid, as_ids), float(value))
            tops.append(entry)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def complete(self, req: CompletionRequest, cancelled: Cancelled | None = None) -> dict[str, Any]:
        """Answer ``/v1/completions`` (raises :class:`RequestError`, or :class:`ClientGone`)."""
        self._check_common(req.model, req.n, req.stream)
        if req.logprobs is not None and req.logprobs > self.max_logprobs:
            raise RequestError(f"logprobs must be <= {self.max_logprobs} (server --max-logprobs)")
        prompts: list[str | list[int]]
        if isinstance(req.prompt, str) or (req.prompt and isinstance(req.prompt[0], int)):
            prompts = [req.prompt]  # type: ignore[list-item]
        else:
            prompts = list(req.prompt)  # type: ignore[arg-type]
        if not prompts:
            raise RequestError("the prompt is empty")
        choices, prompt_tokens, completion_tokens = [], 0, 0
        encoded = [self._prompt_ids(prompt) for prompt in prompts]
        budgets = [self._budget(len(ids), req.max_tokens) for ids in encoded]
        for index, (ids, budget) in enumerate(zip(encoded, budgets, strict=True)):
            new, text, finish = self._generate(
                ids, budget, req.temperature, req.top_p, req.seed, _stops(req.stop), cancelled
            )
            if req.echo:
                text = self.tokenizer.decode(ids) + text
            choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
            if req.logprobs is not None:
                choice["logprobs"] = self._logprobs(
                    ids, new, req.echo, req.logprobs, req.return_tokens_as_token_ids, cancelled
                )
            choices.append(choice)
            prompt_tokens += len(ids)
            completion_tokens += len(new)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt ids of a chat: the chat template's text encoded as written (it holds its own start
        tokens, so none is added), or without a template the contents joined by newlines, with bos."""
        for number, message in enumerate(messages):
            for key in ("role", "content"):
                require_unicode(message[key], f"messages[{number}].{key}")
        if not getattr(self.tokenizer, "chat_template", None):
            return self._prompt_ids(render_chat(self.tokenizer, messages), add_bos=True)
        apply = getattr(self.tokenizer, "apply_chat_template", None)
        if callable(apply):
            text = str(apply(messages, add_generation_prompt=True))
        else:
            text = render_chat(self.tokenizer, messages)
        return self._prompt_ids(text, add_bos=False)

    def chat(self, req: ChatRequest, cancelled: Cancelled | None = None) -> dict[str, Any]:
        """Answer ``/v1/chat/completions`` (raises :class:`RequestError`, or :class:`ClientGone`)."""
        self._check_common(req.model, req.n, req.stream)
        if req.logprobs:
            raise RequestError("logprobs on /v1/chat/completions are not supported here: use /v1/completions")
        ids = self.chat_prompt_ids([m.model_dump() for m in req.messages])
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        new, text, finish = self._generate(
            ids,
            self._budget(len(ids), max_tokens),
            req.temperature,
            req.top_p,
            req.seed,
            _stops(req.stop),
            cancelled,
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(new),
                "total_tokens": len(ids) + len(new),
            },
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(
        self,
        address: tuple[str, int],
        engine: TeacherEngine,
        faults: FaultPlan,
        api_key: str | None,
        max_body_bytes: int = MAX_BODY_BYTES,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        if max_body_bytes < 1 or read_timeout_s <= 0:
            raise ValueError(
                f"max_body_bytes must be >= 1 and read_timeout_s > 0, got {max_body_bytes}, {read_timeout_s}"
            )
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        super().__init__(address, _Handler)
        self.engine = engine
        self.faults = faults
        self.api_key = api_key
        self.stats = ServerStats()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection (a ``drop`` fault, a client gone) is logged at debug, not printed."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "DistilleryTeacher/1"

    def setup(self) -> None:
        """Every read of the connection (request line, headers, idle keep-alive) waits at most
        ``read_timeout_s``; the body has that long in all (:meth:`_read_body`)."""
        self.timeout = self.server.read_timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s %s", self.address_string(), format % args)

    def _client_gone(self) -> bool:
        """True when the client has closed its end (or the connection broke); never blocks."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _refuse(self, status: int, message: str, unread: int = 0) -> None:
        """Answer an error and close the connection (the body was not read, so the next request cannot be
        found); keep discarding up to ``unread`` body bytes for a moment so the client sees the answer."""
        self.close_connection = True
        self._error(status, message, headers={"Connection": "close"})
        if unread <= 0:
            return
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + DRAIN_S
            while unread > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(min(unread, 1 << 16))
                if not chunk:
                    break
                unread -= len(chunk)
        except OSError:
            pass

    def _body_length(self) -> int | None:
        """The declared body size, or None after refusing it (chunked: 411, malformed: 400, too big: 413)."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse(
                411,
                "send the request body with a Content-Length (Transfer-Encoding is not supported)",
                unread=self.server.max_body_bytes,
            )
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        if not re.fullmatch(r"[0-9]+", raw.strip()):
            self._refuse(
                400, f"Content-Length {raw!r} is not a non-negative integer", unread=self.server.max_body_bytes
            )
            return None
        length = int(raw)
        if length > self.server.max_body_bytes:
            self._refuse(
                413,
                f"the request body has {length} bytes; this server takes at most "
                f"{self.server.max_body_bytes} (--max-body-bytes)",
                unread=length,
            )
            return None
        return length

    def _read_body(self, length: int) -> bytes | None:
        """``length`` bytes of body, all within ``read_timeout_s`` (else 408), or None when refused/closed."""
        timeout = self.server.read_timeout_s
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        left = length
        try:
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    self.close_connection = True
                    return None
                parts.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            self._refuse(408, f"the request body did not arrive within {timeout:g} s "
                         f"({length - left} of {length} bytes came)")
            return None
        self.connection.settimeout(timeout)
        return b"".join(parts)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self._leave()  # the request is done before the client can see the answer (and send the next one)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send(
            status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers
        )

    def _authorized(self) -> bool:
        expected = self.server.api_key
        if not expected:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return True
        self._error(401, "invalid or missing API key", "authentication_error")
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send(200, self.server.engine.models())
        elif path == "/distillery/stats":
            self._send(200, self.server.stats.snapshot())
        elif path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route {path}")

    def _leave(self) -> None:
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            self.server.stats.leave()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.stats.enter()
        self._in_flight = True
        try:
            self._post()
        finally:
            self._leave()

    def _post(self) -> None:
        length = self._body_length()
        if length is None:
            return
        raw = self._read_body(length)
        if raw is None:
            return
        if not self._authorized():
            return
        fault = self.server.faults.next()
        if fault is not None:
            self.server.stats.fault(fault)
            if fault == "drop":
                self._leave()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "stall":
                time.sleep(self.server.faults.stall_s)
            else:
                headers = {"Retry-After": "0"} if fault == "429" else None
                self._error(int(fault), f"injected fault {fault} (testing aid)", "server_error", headers)
                return
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise RequestError("the request body must be a JSON object")
            if path == "/v1/completions":
                request = CompletionRequest.model_validate(body)
                answer = self.server.engine.complete(request, self._client_gone)
                self.server.stats.served(request.prompt)
            elif path == "/v1/chat/completions":
                chat = ChatRequest.model_validate(body)
                answer = self.server.engine.chat(chat, self._client_gone)
                self.server.stats.served([m.model_dump() for m in chat.messages])
            else:
                self._error(404, f"no route {path}")
                return
        except ClientGone:
            logger.info("the client of a %s request disconnected; its generation was stopped", path)
            self.server.stats.cancel()
            self.close_connection = True
            return
        except json.JSONDecodeError as exc:
            self._error(400, f"the request body is not JSON: {exc.msg}")
            return
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            self._error(400, problems)
            return
        except (RequestError, ValueError) as exc:
            self._error(400, str(exc))
            return
        except Exception:
            logger.exception("request to %s failed", path)
            self._error(500, "internal error", "server_error")
            return
        self._send(200, answer)


class TeacherServer:
    """A running server (in a background thread); ``url`` ends in ``/v1``. Use as a context manager."""

    def __init__(
        self,
        engine: TeacherEngine,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._server = _Server(
            (host, port), engine, faults or FaultPlan(), api_key, max_body_bytes, read_timeout_s
        )
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="teacher-server",
            daemon=True,
        )

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    @property
    def faults(self) -> FaultPlan:
        return self._server.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._server.faults = plan

    def start(self) -> TeacherServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`close` (from another thread) or an interrupt."""
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
