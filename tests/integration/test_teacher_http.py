"""The HTTP teacher against the real server process (``python -m training.teacher_server``) on 127.0.0.1:
injected 429 and dropped connection, a resumed half-finished collection that re-queries nothing, the API key
kept out of logs, errors and caches, and the command-line tools."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.data import collate, encode_example, read_examples
from training.model import Student
from training.model_config import ModelConfig
from training.teachers.base import TeacherTargets
from training.teachers.cache_builder import CacheSettings, build_topk_cache
from training.teachers.cache_teacher import CacheTeacher
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.http_client import OpenAIClient, RetryPolicy, TeacherHTTPError
from training.teachers.http_teacher import HttpTeacher
from training.tokenizer import DistilleryTokenizer

KEY_ENV = "DISTILLERY_IT_TEACHER_KEY"
SECRET = "sk-integration-5ecret-7e57"
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("http")
    torch.manual_seed(17)
    Student(dataclasses.replace(tiny_config, initializer_range=0.2)).save_pretrained(
        root / "teacher", tokenizer=tiny_tokenizer
    )
    records = [
        {"id": f"r{i}", "prompt": f"Q: {i * 7}*{i}=?", "completion": f"<answer>{i * i * 7}</answer>"}
        for i in range(8)
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"root": root, "teacher": root / "teacher", "data": root / "data.jsonl"}


@pytest.fixture(scope="module")
def server(setup: dict[str, Path]) -> Iterator[dict[str, object]]:
    """The server CLI in a subprocess on a free port, with an API key; the first POST is answered 429, the
    next one dropped."""
    log = setup["root"] / "server.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "training.teacher_server",
                str(setup["teacher"]),
                "--port",
                "0",
                "--threads",
                "1",
                "--model-name",
                "tiny",
                "--api-key-env",
                KEY_ENV,
                "--fail-first",
                "1",
                "--drop-first",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
            env=_env(**{KEY_ENV: SECRET}),
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving tiny" in line, log.read_text()
        url = line.rsplit(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        yield {"url": url, "log": log, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


def _stats(url: str) -> dict:
    client = OpenAIClient(url.removesuffix("/v1"), api_key_env=KEY_ENV, retry=RetryPolicy(2, 0.01, 0.02))
    return client.get("/distillery/stats")


def _teacher(url: str, tokenizer: DistilleryTokenizer, cache_dir: Path | None) -> HttpTeacher:
    client = OpenAIClient(
        url,
        api_key_env=KEY_ENV,
        retry=RetryPolicy(4, 0.01, 0.05),
        concurrency=2,
        cache_dir=cache_dir,
        rng=random.Random(0),
        timeout_s=30,
    )
    return HttpTeacher(client, "tiny", tokenizer, top_k=16)


class CrashAfter:
    """Passes ``targets`` through for ``batches`` calls, then raises (the collecting process dies)."""

    def __init__(self, inner: HttpTeacher, batches: int) -> None:
        self.inner, self.batches = inner, batches
        self.tokenizer, self.vocab_size = inner.tokenizer, inner.vocab_size

    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TeacherTargets:
        if self.batches == 0:
            raise KeyboardInterrupt("collector killed")
        self.batches -= 1
        return self.inner.targets(input_ids, attention_mask)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.logits(input_ids, attention_mask)


def test_collection_survives_faults_and_resumes_without_requerying(
    server: dict,
    setup: dict[str, Path],
    tiny_tokenizer: DistilleryTokenizer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = str(server["url"])
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    responses = tmp_path / "responses"
    settings = CacheSettings(k=16, shard_size=4, batch_size=3)
    out = tmp_path / "cache"
    # first collector: the server's injected 429 and dropped connection are retried; it dies after 2 batches
    with pytest.raises(KeyboardInterrupt):
        build_topk_cache(
            CrashAfter(_teacher(url, tiny_tokenizer, responses), 2),
            [setup["data"]],
            out,
            settings,
            teacher_description={"url": "local"},
            progress=False,
        )
    stats = _stats(url)
    assert stats["faults"] == {"429": 1, "drop": 1}
    assert stats["completed"] == 6 and stats["posts"] == 6 + 2
    assert stats["max_in_flight"] <= 2
    # a new collector resumes: the finished shard is kept, the partial one comes from the response cache
    resumed = _teacher(url, tiny_tokenizer, responses)
    manifest = build_topk_cache(
        resumed, [setup["data"]], out, settings, teacher_description={"url": "local"}, progress=False
    )
    stats = _stats(url)
    assert manifest.complete and manifest.totals["entries"] == 8
    assert stats["completed"] == 8 and stats["repeated_prompts"] == 0
    assert resumed.client.stats["cache_hits"] == 2
    # same targets as the teacher in-process
    teacher = CheckpointTeacher(setup["teacher"])
    examples = [ex for _, ex in read_examples(setup["data"])]
    batch = collate([encode_example(ex, tiny_tokenizer, 128, False) for ex in examples], 0)
    got = CacheTeacher(out).targets(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    want = torch.log_softmax(teacher.logits(batch["input_ids"], batch["attention_mask"]).double(), -1).topk(
        16, -1
    )
    assert torch.equal(got.topk_ids[real], want.indices[real])
    # the key travels only in the Authorization header
    assert SECRET not in caplog.text
    for path in [*responses.rglob("*"), *out.rglob("*"), server["log"]]:
        if Path(path).is_file():
            assert SECRET.encode() not in Path(path).read_bytes(), path


def test_wrong_key_fails_without_showing_either_key(
    server: dict, tiny_tokenizer: DistilleryTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-key-1234567"
    monkeypatch.setenv(KEY_ENV, wrong)
    with pytest.raises(TeacherHTTPError) as info:
        _teacher(str(server["url"]), tiny_tokenizer, None)
    assert info.value.status == 401
    assert wrong not in str(info.value) and SECRET not in str(info.value)


def test_cache_cli_against_the_server(server: dict, setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli-cache"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.teacher_cache",
            "--teacher",
            str(server["url"]),
            "--teacher-opt",
            "model=tiny",
            "--teacher-opt",
            f"tokenizer={setup['teacher']}",
            "--teacher-opt",
            f"api_key_env={KEY_ENV}",
            "--teacher-opt",
            "top_k=8",
            "--teacher-opt",
            "backoff_s=0.01",
            "--data",
            str(setup["data"]),
            "--out",
            str(out),
            "--top-k",
            "8",
            "--no-progress",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(**{KEY_ENV: SECRET}),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["entries"] == 8 and summary["bytes_per_token"] == 9 + 8 + 2
    assert SECRET not in result.stdout + result.stderr
    assert CacheTeacher(out).k == 8


@pytest.mark.parametrize(
    "module", ["training.teacher_cache", "training.teacher_server", "training.teachers.generate"]
)
def test_cli_help(module: str, capsys: pytest.CaptureFixture) -> None:
    """``--help`` of each tool (the ``python -m`` entry points themselves run in the tests above)."""
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "usage: python -m " + module in out
    if module == "training.teacher_server":
        assert "--fail-first" in out and "testing aids" in out and "127.0.0.1" in out
