"""`torchrun --nproc_per_node 2 -m training.distill_kd` (gloo on CPU) follows the 1-process loss trajectory."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kd_helpers import make_tiny_setup, tiny_config


def _losses(run: Path) -> list[tuple[float, float]]:
    lines = [json.loads(x) for x in (run / "logs" / "train.jsonl").read_text().splitlines()]
    return [(rec["loss"], rec["grad_norm"]) for rec in lines if rec["event"] == "train"]


def _assert_one_rank_equals_two(tmp_path: Path, parallel: str) -> None:
    """1 rank x batch 8 (plain run) and 2 ranks x batch 4 (torchrun, ``parallel``) give the same 4 losses and
    grad norms."""
    paths = make_tiny_setup(tmp_path / "setup", n_train=64, n_val=8)
    configs = {}
    for name, batch, mode in (("one", 8, "ddp"), ("two", 4, parallel)):
        cfg = tiny_config(paths, tmp_path / name, data={"batch_size": batch}, optim={"max_steps": 4},
                          eval={"every": 4, "generate_examples": 0}, checkpoint={"every": 4}, parallel=mode)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        configs[name] = path
    torchrun = str(Path(sys.executable).parent / "torchrun")
    one = subprocess.run([sys.executable, "-m", "training.distill_kd", "--config", str(configs["one"])],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                          str(port), "-m", "training.distill_kd",
                          "--config", str(configs["two"])], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    for (loss_a, gn_a), (loss_b, gn_b) in zip(a, b, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        assert gn_b == pytest.approx(gn_a, rel=1e-4)


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed next to the interpreter")
def test_two_process_run_matches_single_process(tmp_path: Path) -> None:
    """2 ranks x batch 4 see the same global batches as 1 rank x batch 8: same losses and grad norms."""
    _assert_one_rank_equals_two(tmp_path, "ddp")
    assert (tmp_path / "two" / "student" / "model.safetensors").is_file()
    assert not (tmp_path / "two" / "logs" / "train.rank1.jsonl").exists()


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed next to the interpreter")
def test_fsdp_two_process_run_matches_single_process(tmp_path: Path) -> None:
    """`parallel: fsdp` (FSDP2 fully_shard, gloo on CPU): 2 ranks x batch 4 follow the 1-rank x batch 8 losses and
    grad norms, and the gathered student artifact loads."""
    _assert_one_rank_equals_two(tmp_path, "fsdp")
    from training.model import Student

    assert Student.from_pretrained(str(tmp_path / "two" / "student")).num_parameters() > 0
    assert (tmp_path / "two" / "checkpoints").is_dir()


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed next to the interpreter")
def test_fsdp_run_stopped_and_resumed_matches_uninterrupted_single_process(tmp_path: Path) -> None:
    """`parallel: fsdp`: 2 ranks stopped after step 2 and resumed (the single-process checkpoint is loaded and
    re-sharded, Adam moments included) give the uninterrupted 1-rank losses and grad norms for steps 3-4."""
    paths = make_tiny_setup(tmp_path / "setup", n_train=64, n_val=8)
    common = {"optim": {"max_steps": 4}, "eval": {"every": 4, "generate_examples": 0},
              "checkpoint": {"every": 2}}
    one_cfg = tiny_config(paths, tmp_path / "one", data={"batch_size": 8}, **common)
    two_cfg = tiny_config(paths, tmp_path / "two", data={"batch_size": 4}, parallel="fsdp", resume="auto",
                          **common)
    for name, cfg in (("one", one_cfg), ("two", two_cfg)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    one = subprocess.run([sys.executable, "-m", "training.distill_kd", "--config", str(tmp_path / "one.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    for extra in (["--stop-after-steps", "2"], []):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        run = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                              str(port), "-m", "training.distill_kd", "--config", str(tmp_path / "two.yaml"),
                              *extra], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == 4 and len(b) == 4, (a, b)  # steps 1-2 of the stopped run, then 3-4 after the resume
    for (loss_a, gn_a), (loss_b, gn_b) in zip(a, b, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        assert gn_b == pytest.approx(gn_a, rel=1e-4)
