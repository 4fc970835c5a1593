"""Live status: memory figures against the OS, the progress tracker's clock, the HTTP server and /metrics."""

from __future__ import annotations

import json
import resource
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from training.ops import run_status
from training.ops.run_hooks import ProgressHook, StatusServerHook
from training.ops.run_status import RunTracker, StatusServer, build_registry, gpu_memory, process_memory


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


class Clock:
    """A hand-driven ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(run_status.time, "monotonic", fake)
    return fake


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


def test_process_memory_matches_proc_status() -> None:
    memory = process_memory()
    assert memory["memory_source"] == "/proc/self/status"
    assert abs(memory["rss_bytes"] - _vm("VmRSS")) < 4 * 2**20
    assert memory["peak_rss_bytes"] >= memory["rss_bytes"]
    assert abs(memory["peak_rss_bytes"] - _vm("VmHWM")) < 4 * 2**20


def test_process_memory_without_proc_falls_back_to_getrusage(tmp_path: Path) -> None:
    memory = process_memory(tmp_path / "no-such-status")
    assert memory["rss_bytes"] is None and "not readable" in memory["rss_reason"]
    assert memory["peak_rss_bytes"] == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_gpu_memory_is_null_with_a_reason_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        devices = gpu_memory()["gpu_memory"]
        assert devices and all(d["allocated_bytes"] >= 0 for d in devices)
    else:
        report = gpu_memory()
        assert report["gpu_memory"] is None and "torch.cuda is not available" in report["gpu_memory_reason"]


def test_tracker_rates_exclude_paused_time(clock: Clock) -> None:
    tracker = RunTracker()
    tracker.start("run1", step=10, max_steps=20)
    clock.now += 0.5
    tracker.record_step(11, {"loss": 2.0, "lr": 0.1, "tokens": 100.0}, epoch=0, batches_in_epoch=11)
    clock.now += 1.5
    tracker.record_step(12, {"loss": 1.5, "lr": 0.1, "tokens": 300.0}, epoch=0, batches_in_epoch=12)
    progress = tracker.progress()
    assert progress["seconds_per_step"] == pytest.approx(1.0)
    assert progress["tokens_per_second"] == pytest.approx(200.0)
    assert progress["eta_seconds"] == pytest.approx(8.0)
    assert progress["loss"] == 1.5 and progress["step"] == 12 and progress["batches_in_epoch"] == 12
    tracker.set_state("paused")
    clock.now += 100.0  # paused: must not count
    tracker.set_state("running")
    clock.now += 1.0
    tracker.record_step(13, {"loss": 1.0, "lr": 0.1, "tokens": 200.0})
    progress = tracker.progress()
    assert progress["seconds_per_step"] == pytest.approx(1.0)
    assert progress["tokens_per_second"] == pytest.approx(200.0)
    tracker.finish("completed", 20)
    assert tracker.progress()["eta_seconds"] == 0.0 and tracker.progress()["state"] == "finished"
    with pytest.raises(ValueError, match="unknown run state"):
        tracker.set_state("sleeping")


def test_tracker_reports_non_finite_loss_as_null() -> None:
    tracker = RunTracker()
    tracker.start("run1", 0, 5, last_metrics={"val_loss": 1.25})
    tracker.record_step(1, {"loss": float("nan"), "tokens": 10.0})
    progress = tracker.progress()
    assert progress["loss"] is None
    assert progress["last_eval"] == {"step": 0, "metrics": {"val_loss": 1.25}}


def test_metrics_come_from_their_own_registry() -> None:
    tracker = RunTracker()
    tracker.start("abc", 3, 9)
    tracker.record_step(4, {"loss": 0.75, "lr": 0.01, "tokens": 50.0})
    tracker.record_eval(4, {"val_loss": 0.5, "accuracy": 0.25})
    text = prometheus_client.generate_latest(build_registry(tracker)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["distillery_train_step"].samples[0].value == 4
    assert families["distillery_train_loss"].samples[0].value == 0.75
    assert families["distillery_run_info"].samples[0].labels["run_id"] == "abc"
    state = {s.labels["state"]: s.value for s in families["distillery_run_state"].samples}
    assert state == {"running": 1.0, "paused": 0.0, "stopping": 0.0, "finished": 0.0}
    evals = {s.labels["metric"]: s.value for s in families["distillery_eval_metric"].samples}
    assert evals == {"accuracy": 0.25, "val_loss": 0.5}
    assert families["distillery_process_resident_memory_bytes"].samples[0].value > 0
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "distillery_train_step" not in global_text


def test_status_server_serves_status_and_metrics_on_loopback() -> None:
    tracker = RunTracker()
    tracker.start("srv", 0, 4)
    tracker.record_step(1, {"loss": 3.0, "lr": 0.5, "tokens": 8.0}, epoch=2, batches_in_epoch=1)
    server = StatusServer(tracker)
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:") and server.port > 0
        code, content_type, body = _get(url + "/status")
        status = json.loads(body)
        assert code == 200 and content_type == "application/json"
        assert status["run_id"] == "srv" and status["step"] == 1 and status["epoch"] == 2
        assert status["loss"] == 3.0 and status["lr"] == 0.5 and status["state"] == "running"
        assert abs(status["rss_bytes"] - _vm("VmRSS")) < 16 * 2**20
        assert "gpu_memory" in status and "gpu_memory_reason" in status
        code, content_type, body = _get(url + "/metrics")
        assert code == 200 and content_type.startswith("text/plain")
        assert "distillery_train_step 1.0" in body.decode()
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(url + "/nope")
        assert exc.value.code == 404
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        _get(url + "/status")


def test_status_hooks_follow_a_run(tmp_path: Path) -> None:
    tracker = RunTracker()
    progress, server = ProgressHook(tracker), StatusServerHook(tracker, port=0)
    trainer: Any = SimpleNamespace(run_id="hooked", step=0, last_metrics={}, tokens_seen=0.0, out=tmp_path,
                                   cfg=SimpleNamespace(optim=SimpleNamespace(max_steps=3)),
                                   stream=SimpleNamespace(stream=SimpleNamespace(epoch=1, batches_yielded=4)))
    progress.on_train_start(trainer)
    server.on_train_start(trainer)
    try:
        trainer.step, trainer.tokens_seen = 1, 16.0
        progress.on_step_end(trainer, {"loss": 2.5, "tokens": 16.0})
        progress.on_eval(trainer, {"val_loss": 2.0})
        progress.on_checkpoint(trainer, tmp_path / "checkpoints" / "step-00000001")
        status = json.loads(_get(tracker.status_url + "/status")[2])  # type: ignore[operator]
        assert status["step"] == 1 and status["epoch"] == 1 and status["batches_in_epoch"] == 4
        assert status["tokens_seen"] == 16.0
        assert status["last_eval"] == {"step": 1, "metrics": {"val_loss": 2.0}}
        assert status["last_checkpoint"].endswith("step-00000001")
    finally:
        result = SimpleNamespace(status="completed", step=1)
        progress.on_train_end(trainer, result)  # type: ignore[arg-type]
        server.on_train_end(trainer, result)  # type: ignore[arg-type]
    assert tracker.progress()["state"] == "finished" and tracker.progress()["result_status"] == "completed"
    with pytest.raises(urllib.error.URLError):
        _get(tracker.status_url + "/status")  # type: ignore[operator]


def test_a_busy_port_leaves_the_run_training_without_status(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    holder = StatusServer(RunTracker())
    holder.start()
    try:
        tracker = RunTracker()
        hook = StatusServerHook(tracker, port=holder.port)
        trainer: Any = SimpleNamespace(run_id="busy", out=tmp_path)
        hook.on_train_start(trainer)
        assert tracker.status_url is None
        assert "no status server" in capsys.readouterr().err
        logged = [json.loads(line) for line in (tmp_path / "logs" / "control.jsonl").read_text().splitlines()]
        assert logged[0]["event"] == "status_server_failed" and logged[0]["run_id"] == "busy"
        hook.on_train_end(trainer, SimpleNamespace(status="completed", step=0))  # type: ignore[arg-type]
    finally:
        holder.stop()
