"""End to end: a real training process paused mid-epoch, resumed, stopped, interrupted while paused, and
resumed from its checkpoints, ending with exactly the weights of an uninterrupted run. Live status and
/metrics are read while it runs and its RSS is checked against /proc/PID/status read from this process."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from run_fixtures import (
    REPO,
    distill_command,
    kd_config,
    read_json,
    run_module,
    start_distill,
    stop_process,
    subprocess_env,
    tiny_project,
    wait_for,
    write_config,
)
from safetensors.torch import load_file

from training.ops import run_control
from training.ops.structured_log import read_log

MAX_STEPS = 240
EPOCH_BOUNDARY_RETRIES = 4


def _proc_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in USER_HZ ticks (100 on Linux)


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _metrics(url: str) -> dict[str, list[Any]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_log(run_dir / "logs" / "train.jsonl") if r["event"] == "train"]


def _state(run_dir: Path) -> dict[str, Any] | None:
    return read_json(run_dir / run_control.RUN_STATE_FILE)


def _pause_and_check(run_dir: Path, proc: subprocess.Popen[bytes], log: Path, hold: float) -> dict[str, Any]:
    """Pause through control.json; while paused, the step must not move, status must say so, memory must be
    the OS's figure and the process must sleep. Returns the paused run state."""
    wait_for(lambda: (s := _state(run_dir)) and s["step"] >= 3 and s.get("status_url"), 120, "step 3",
             proc=proc, log=log)
    status_url = _state(run_dir)["status_url"]  # type: ignore[index]
    for _ in range(EPOCH_BOUNDARY_RETRIES):
        command = run_control.issue_command(run_dir, "pause", reason="integration test")
        paused = run_control.wait_for(run_dir, "pause", command.seq, timeout=60)
        if _get_json(status_url + "/status")["batches_in_epoch"] > 0:
            break
        # The pause landed exactly on an epoch boundary (1 step in 25: 200 examples, batch 8): resume, let it move
        # on a step or two and pause again, so the resumed run really continues mid-epoch.
        command = run_control.issue_command(run_dir, "resume", reason="integration test: epoch boundary")
        run_control.wait_for(run_dir, "resume", command.seq, timeout=60)
        past = paused.step + 2
        wait_for(lambda past=past: (s := _state(run_dir)) and s["step"] >= past, 60, "a step past the boundary",
                 proc=proc, log=log)
    logged = _train_steps(run_dir)
    cpu_before, started = _cpu_seconds(proc.pid), time.monotonic()
    while time.monotonic() - started < hold:
        status = _get_json(status_url + "/status")
        os_rss = _proc_field(proc.pid, "VmRSS")
        assert status["state"] == "paused" and status["step"] == paused.step
        assert _state(run_dir)["step"] == paused.step  # type: ignore[index]
        tolerance = max(8 * 2**20, 0.05 * os_rss)
        assert abs(status["rss_bytes"] - os_rss) <= tolerance, (status["rss_bytes"], os_rss)
        assert status["peak_rss_bytes"] >= status["rss_bytes"]
        assert abs(status["peak_rss_bytes"] - _proc_field(proc.pid, "VmHWM")) <= 8 * 2**20
        time.sleep(0.25)
    cpu_used = _cpu_seconds(proc.pid) - cpu_before
    assert cpu_used < 0.25 * hold, f"a paused run used {cpu_used:.2f}s of CPU in {hold}s"
    assert _train_steps(run_dir) == logged, "steps were logged while paused"
    assert status["pid"] == proc.pid and status["run_id"] == paused.run_id
    assert status["epoch"] is not None and status["batches_in_epoch"] > 0, "not paused mid-epoch"
    assert status["loss"] > 0 and status["lr"] > 0 and status["tokens_per_second"] > 0
    assert status["eta_seconds"] > 0 and status["max_steps"] == MAX_STEPS
    if not torch.cuda.is_available():
        assert status["gpu_memory"] is None and status["gpu_memory_reason"]
    metrics = _metrics(status_url + "/metrics")
    assert metrics["distillery_train_step"][0].value == paused.step
    assert {s.labels["state"]: s.value for s in metrics["distillery_run_state"]}["paused"] == 1.0
    return paused.model_dump()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_project(tmp_path_factory.mktemp("project"))


def test_pause_resume_stop_and_resume_match_an_uninterrupted_run(project: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    def config(name: str) -> Path:
        cfg = kd_config(tmp_path, project["tokenizer"], [project["train"]], [project["val"]],
                        out_dir=tmp_path / name, optim={"max_steps": MAX_STEPS})
        return write_config(tmp_path / f"{name}.yaml", cfg)

    ref_cfg, ctl_cfg = config("ref"), config("ctl")
    run_dir = tmp_path / "ctl"
    reference = start_distill("--config", str(ref_cfg), "--no-run-control", log=tmp_path / "ref.log")
    first_log = tmp_path / "first.log"
    first = start_distill("--config", str(ctl_cfg), "--status-port", "0", log=first_log)
    try:
        # leg 1: pause mid-epoch, resume with SIGUSR1 (runctl --via signal), stop through control.json
        paused = _pause_and_check(run_dir, first, first_log, hold=2.0)
        shown = run_module("training.runctl", "status", str(run_dir), timeout=60)
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["state"] == "paused" and report["alive"] and report["pid"] == first.pid
        resumed = run_module("training.runctl", "resume", str(run_dir), "--via", "signal", "--wait", "60",
                             timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["signal"] == "SIGUSR1"
        wait_for(lambda: (s := _state(run_dir)) and s["step"] > paused["step"], 60, "progress after resume",
                 proc=first, log=first_log)
        stopped = run_module("training.runctl", "stop", str(run_dir), "--wait", "60", timeout=90)
        assert stopped.returncode == 0, stopped.stderr
        assert first.wait(timeout=60) == 0
        summary = json.loads(first_log.read_text()[first_log.read_text().index("{"):])
        stop_step = summary["step"]
        assert summary["status"] == "stopped" and paused["step"] < stop_step < MAX_STEPS
        assert (run_dir / "checkpoints" / f"step-{stop_step:08d}").is_dir()
        assert _state(run_dir)["state"] == "finished"  # type: ignore[index]
        refused = run_module("training.runctl", "pause", str(run_dir), timeout=60)
        assert refused.returncode == 2 and "finished" in refused.stderr

        # leg 2: resume from the checkpoint, pause again, SIGTERM while paused: checkpoint and exit 130
        second_log = tmp_path / "second.log"
        second = start_distill("--config", str(ctl_cfg), "--status-port", "0", log=second_log)
        wait_for(lambda: (s := _state(run_dir)) and s["state"] == "running" and s["pid"] == second.pid, 120,
                 "the second leg to start", proc=second, log=second_log)
        again = _pause_and_check(run_dir, second, second_log, hold=0.5)
        assert again["step"] > stop_step
        interrupted = run_module("training.runctl", "stop", str(run_dir), "--via", "signal", "--wait", "60",
                                 timeout=90)
        assert interrupted.returncode == 0, interrupted.stderr
        assert second.wait(timeout=60) == 130
        assert (run_dir / "checkpoints" / f"step-{again['step']:08d}").is_dir()

        # leg 3: run to the end
        last = subprocess.run(distill_command("--config", str(ctl_cfg)), cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=180, check=False)
        assert last.returncode == 0, last.stderr[-3000:]
        assert json.loads(last.stdout)["status"] == "completed"
        assert reference.wait(timeout=180) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    finally:
        for proc in (first, reference):
            stop_process(proc)

    ours = load_file(str(run_dir / "student" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "ref" / "student" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), f"{name} differs from the uninterrupted run"
    starts = [r for r in read_log(run_dir / "logs" / "train.jsonl") if r["event"] == "start"]
    assert [s["step"] for s in starts] == [0, stop_step, again["step"]]
    assert len({r["run_id"] for r in read_log(run_dir / "logs" / "train.jsonl")}) == 1
    control = read_log(run_dir / "logs" / "control.jsonl")
    assert {r["run_id"] for r in control} == {starts[0]["run_id"]}
    events = [r["event"] for r in control]
    for expected in ("status_server_started", "paused", "resumed", "pause_ended_by_stop", "run_finished"):
        assert expected in events
    finished = [r["status"] for r in control if r["event"] == "run_finished"]
    assert finished == ["stopped", "interrupted", "completed"]
