"""An OpenAI-compatible HTTP server for a local teacher (Distillery checkpoint or Hugging Face directory).

Endpoints: ``GET /v1/models``; ``POST /v1/completions`` (text or token-id prompts, batch prompts, generation,
``echo``, ``logprobs`` up to ``max_logprobs``, ``stop``, ``seed``, and vLLM's ``return_tokens_as_token_ids``);
``POST /v1/chat/completions`` (text; messages rendered with the tokenizer's chat template, or joined by
newlines when it has none). Token strings in ``logprobs`` are the decoded text of each token (as OpenAI and
vLLM), or ``token_id:N`` when asked. ``/v1/models`` also states the vocabulary size and tokenizer fingerprint
(``"distillery": {...}``) so a client can check it holds the same tokenizer. ``GET /distillery/stats`` gives
request counters.

Text prompts are encoded with ``bos`` first (as Distillery models are trained); token-id prompts are used
as given. Generation with ``temperature: 0`` is greedy.

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
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.teacher_sources.local import GenerationParams, generate_ids, sequence_logprobs
from training.teacher_sources.teacher_tokenizer import render_chat

logger = logging.getLogger(__name__)

FAULTS = ("429", "500", "502", "503", "504", "drop", "stall")
MAX_BODY_BYTES = 64 << 20


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

    def enter(self) -> None:
        with self._lock:
            self.posts += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

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
                "distinct_prompts": len(self.prompts),
                "repeated_prompts": sum(1 for n in self.prompts.values() if n > 1),
            }


class RequestError(ValueError):
    """A request the server refuses (HTTP 400) with a message for the client."""


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
    """Runs a dense local teacher for the API (one request at a time on the model)."""

    def __init__(
        self, teacher: Any, name: str, max_logprobs: int = 64, default_chat_tokens: int = 256
    ) -> None:
        self.teacher = teacher
        self.name = name
        self.tokenizer = teacher.tokenizer
        self.vocab_size = int(teacher.vocab_size)
        self.max_logprobs = max_logprobs
        self.default_chat_tokens = default_chat_tokens
        self._lock = threading.Lock()
        self.created = int(time.time())

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

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_bos=True)
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
    ) -> tuple[list[int], str, str]:
        """-> (new ids, their text, finish reason)."""
        params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        with self._lock:
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
        self, ids: list[int], new: list[int], echo: bool, top_n: int, as_ids: bool
    ) -> dict[str, Any]:
        with self._lock:
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

    def complete(self, req: CompletionRequest) -> dict[str, Any]:
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
        for index, prompt in enumerate(prompts):
            ids = self._prompt_ids(prompt)
            new, text, finish = self._generate(
                ids, req.max_tokens, req.temperature, req.top_p, req.seed, _stops(req.stop)
            )
            if req.echo:
                text = self.tokenizer.decode(ids) + text
            choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
            if req.logprobs is not None:
                choice["logprobs"] = self._logprobs(
                    ids, new, req.echo, req.logprobs, req.return_tokens_as_token_ids
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

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        self._check_common(req.model, req.n, req.stream)
        if req.logprobs:
            raise RequestError("logprobs on /v1/chat/completions are not supported here: use /v1/completions")
        prompt = render_chat(self.tokenizer, [m.model_dump() for m in req.messages])
        ids = self._prompt_ids(prompt)
        max_tokens = req.max_completion_tokens or req.max_tokens
        new, text, finish = self._generate(
            ids,
            self.default_chat_tokens if max_tokens is None else max_tokens,
            req.temperature,
            req.top_p,
            req.seed,
            _stops(req.stop),
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

    def __init__(
        self, address: tuple[str, int], engine: TeacherEngine, faults: FaultPlan, api_key: str | None
    ) -> None:
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s %s", self.address_string(), format % args)

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
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._error(413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        raw = self.rfile.read(length)
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
                answer = self.server.engine.complete(request)
                self.server.stats.served(request.prompt)
            elif path == "/v1/chat/completions":
                chat = ChatRequest.model_validate(body)
                answer = self.server.engine.chat(chat)
                self.server.stats.served([m.model_dump() for m in chat.messages])
            else:
                self._error(404, f"no route {path}")
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
    ) -> None:
        self._server = _Server((host, port), engine, faults or FaultPlan(), api_key)
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
