"""Live status of a training run: a progress tracker, memory figures, and an HTTP server for both.

``GET /status`` answers JSON: run id, state (``running``/``paused``/``stopping``/``finished``), step, epoch,
loss, learning rate, tokens/s and seconds/step over the last steps (paused time excluded), ETA, the last
evaluation, the process's resident and peak memory in bytes (``/proc/self/status`` ``VmRSS``/``VmHWM``,
read at request time), and GPU memory when ``torch.cuda`` is available (else ``gpu_memory: null`` with a
``gpu_memory_reason``). ``GET /metrics`` serves the same figures in the Prometheus text format from a
registry of its own (never the process-global one). The server binds ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

STATES = ("running", "paused", "stopping", "finished")


# ---- memory --------------------------------------------------------------------------------------------
def process_memory(status_path: Path = Path("/proc/self/status")) -> dict[str, Any]:
    """Resident and peak resident memory of this process in bytes.

    From ``VmRSS``/``VmHWM`` of ``/proc/self/status`` where it exists; elsewhere the peak comes from
    ``getrusage`` (kilobytes on Linux, bytes on macOS) and the current RSS is null with a reason.
    """
    try:
        fields = {}
        for line in status_path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                number, unit = value.split()
                if unit != "kB":
                    raise ValueError(f"unexpected unit {unit!r} for {key}")
                fields[key] = int(number) * 1024
        return {"rss_bytes": fields["VmRSS"], "peak_rss_bytes": fields["VmHWM"],
                "memory_source": str(status_path)}
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024
        return {"rss_bytes": None, "peak_rss_bytes": peak * scale, "memory_source": "getrusage",
                "rss_reason": f"{status_path} is not readable on this platform"}


def gpu_memory() -> dict[str, Any]:
    """Per-device CUDA memory in bytes, or ``{"gpu_memory": None, "gpu_memory_reason": ...}``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"gpu_memory": None, "gpu_memory_reason": "torch is not loaded in this process"}
    if not torch.cuda.is_available():
        reason = ("torch.cuda is not available: this torch build has no CUDA support"
                  if torch.version.cuda is None else "torch.cuda is not available: no CUDA device is visible")
        return {"gpu_memory": None, "gpu_memory_reason": reason}
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append({"device": index, "name": torch.cuda.get_device_name(index),
                        "allocated_bytes": int(torch.cuda.memory_allocated(index)),
                        "reserved_bytes": int(torch.cuda.memory_reserved(index)),
                        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(index)),
                        "free_bytes": int(free), "total_bytes": int(total)})
    return {"gpu_memory": devices, "gpu_memory_reason": None}


# ---- progress ------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class RunTracker:
    """Progress of one run, written by the training thread (via hooks) and read by the status server.

    Throughput and ETA come from the last ``window`` optimizer steps, each timed from the end of the
    previous step (or the start of training, or the end of a pause), so paused time never counts.
    """

    def __init__(self, window: int = 50) -> None:
        self._lock = threading.Lock()
        self._steps: deque[tuple[float, float]] = deque(maxlen=window)  # (seconds, tokens) per step
        self._baseline = time.monotonic()
        self._started_wall = time.time()
        self.run_id: str | None = None
        self.state = "running"
        self.step = 0
        self.max_steps: int | None = None
        self.epoch: int | None = None
        self.batches_in_epoch: int | None = None
        self.terms: dict[str, float] = {}
        self.tokens_seen = 0.0
        self.last_eval: dict[str, Any] | None = None
        self.last_checkpoint: str | None = None
        self.result_status: str | None = None
        self.status_url: str | None = None
        self.updated_at = time.time()

    def start(self, run_id: str, step: int, max_steps: int,
              last_metrics: dict[str, float] | None = None) -> None:
        """A (possibly resumed) run begins at ``step``."""
        with self._lock:
            self.run_id, self.step, self.max_steps = run_id, step, max_steps
            self.state, self.result_status = "running", None
            self._steps.clear()
            self._baseline = time.monotonic()
            self._started_wall = time.time()
            if last_metrics:
                self.last_eval = {"step": step, "metrics": dict(last_metrics)}
            self.updated_at = time.time()

    def record_step(self, step: int, terms: dict[str, float], epoch: int | None = None,
                    batches_in_epoch: int | None = None, tokens_seen: float | None = None) -> None:
        """One optimizer step ended now."""
        now = time.monotonic()
        with self._lock:
            self._steps.append((now - self._baseline, float(terms.get("tokens", 0.0))))
            self._baseline = now
            self.step = step
            self.terms = dict(terms)
            self.epoch, self.batches_in_epoch = epoch, batches_in_epoch
            if tokens_seen is None:
                tokens_seen = self.tokens_seen + terms.get("tokens", 0.0)
            self.tokens_seen = tokens_seen
            self.updated_at = time.time()

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        with self._lock:
            self.last_eval = {"step": step, "metrics": dict(metrics)}
            self.updated_at = time.time()

    def record_checkpoint(self, path: Path) -> None:
        with self._lock:
            self.last_checkpoint = str(path)

    def set_state(self, state: str) -> None:
        """Move to ``state``; leaving ``paused`` restarts the step clock so the pause is not timed."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
        with self._lock:
            if self.state == "paused" and state != "paused":
                self._baseline = time.monotonic()
            self.state = state
            self.updated_at = time.time()

    def finish(self, result_status: str, step: int) -> None:
        with self._lock:
            self.state, self.result_status, self.step = "finished", result_status, step
            self.updated_at = time.time()

    def progress(self) -> dict[str, Any]:
        """The progress fields of ``/status`` and ``run_state.json``."""
        with self._lock:
            seconds = sum(s for s, _ in self._steps)
            tokens = sum(t for _, t in self._steps)
            per_step = seconds / len(self._steps) if self._steps and seconds > 0 else None
            remaining = max(self.max_steps - self.step, 0) if self.max_steps is not None else None
            if self.state == "finished":
                eta: float | None = 0.0
            elif per_step is not None and remaining is not None:
                eta = remaining * per_step
            else:
                eta = None
            return {
                "run_id": self.run_id, "state": self.state, "step": self.step, "max_steps": self.max_steps,
                "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "loss": _finite(self.terms.get("loss")), "lr": _finite(self.terms.get("lr")),
                "grad_norm": _finite(self.terms.get("grad_norm")),
                "tokens_per_second": tokens / seconds if seconds > 0 else None,
                "seconds_per_step": per_step, "eta_seconds": eta, "tokens_seen": self.tokens_seen,
                "elapsed_seconds": time.time() - self._started_wall,
                "last_eval": json.loads(json.dumps(self.last_eval)) if self.last_eval else None,
                "last_checkpoint": self.last_checkpoint, "result_status": self.result_status,
                "status_url": self.status_url, "updated_at": self.updated_at,
            }

    def status(self) -> dict[str, Any]:
        """Everything ``GET /status`` answers: progress, this process's memory, GPU memory."""
        report = self.progress()
        report.update(pid=os.getpid(), time=time.time())
        report.update(process_memory())
        report.update(gpu_memory())
        return report


# ---- Prometheus ----------------------------------------------------------------------------------------
class RunCollector(Collector):
    """Builds the metrics from a :class:`RunTracker` at scrape time (so memory is read when scraped)."""

    def __init__(self, tracker: RunTracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterator[Any]:
        status = self.tracker.status()
        yield InfoMetricFamily("distillery_run", "The training run this process serves",
                               value={"run_id": status["run_id"] or ""})
        state = GaugeMetricFamily("distillery_run_state", "1 for the run's current state", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if status["state"] == name else 0.0)
        yield state
        gauges = (("distillery_train_step", "Optimizer steps done", "step"),
                  ("distillery_train_max_steps", "Optimizer steps planned", "max_steps"),
                  ("distillery_train_epoch", "Current data epoch (0-based)", "epoch"),
                  ("distillery_train_loss", "Loss of the last optimizer step", "loss"),
                  ("distillery_train_learning_rate", "Learning rate of the last step", "lr"),
                  ("distillery_train_grad_norm", "Gradient norm of the last step (before clipping)",
                   "grad_norm"),
                  ("distillery_train_tokens_per_second", "Target tokens per second over recent steps",
                   "tokens_per_second"),
                  ("distillery_train_seconds_per_step", "Seconds per optimizer step over recent steps",
                   "seconds_per_step"),
                  ("distillery_train_eta_seconds", "Estimated seconds of training left", "eta_seconds"),
                  ("distillery_process_resident_memory_bytes", "Resident set size (VmRSS)", "rss_bytes"),
                  ("distillery_process_peak_resident_memory_bytes", "Peak resident set size (VmHWM)",
                   "peak_rss_bytes"))
        for name, text, key in gauges:
            value = _finite(status.get(key))
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)
        yield CounterMetricFamily("distillery_train_tokens", "Target tokens trained on by this process",
                                  value=float(status["tokens_seen"]))
        if status["last_eval"]:
            evals = GaugeMetricFamily("distillery_eval_metric", "Metrics of the last evaluation",
                                      labels=["metric"])
            for key, value in sorted(status["last_eval"]["metrics"].items()):
                number = _finite(value)
                if number is not None:
                    evals.add_metric([key], number)
            yield evals
        if status["gpu_memory"]:
            families = {key: GaugeMetricFamily(f"distillery_gpu_{key}", f"CUDA {key.replace('_', ' ')}",
                                               labels=["device"])
                        for key in ("allocated_bytes", "reserved_bytes", "peak_allocated_bytes")}
            for device in status["gpu_memory"]:
                for key, family in families.items():
                    family.add_metric([str(device["device"])], float(device[key]))
            yield from families.values()


def build_registry(tracker: RunTracker) -> CollectorRegistry:
    """A registry of its own holding only this run's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(tracker))
    return registry


# ---- HTTP ------------------------------------------------------------------------------------------------
class StatusServer:
    """Serves ``/status`` and ``/metrics`` for a tracker from a daemon thread.

    Args:
        tracker: the run's progress.
        host: address to bind (``127.0.0.1`` by default: never exposed beyond this machine unless asked).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, tracker: RunTracker, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tracker = tracker
        self.registry = build_registry(tracker)
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Bind and serve in the background; returns the base URL."""
        tracker, registry = self.tracker, self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/status":
                    body = json.dumps(tracker.status(), sort_keys=True).encode()
                    content_type = "application/json"
                elif path == "/metrics":
                    body = generate_latest(registry)
                    content_type = CONTENT_TYPE_LATEST
                else:
                    self.send_error(404, "only /status and /metrics are served")
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
                """Requests are not logged (a scraper every few seconds would flood the run's output)."""

        server_class = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6Server
        self._server = server_class((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="distillery-status",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
