"""Every repository path that a command's ``--help`` or the README names exists (issue 13, item 6).

A user copies ``--config configs/x.yaml`` out of a help text or the README and expects it to work.
The commands are found, not listed: every module of training/, conversion/, arbiter/, scripts/ and
benches/ with a ``__main__`` block (or a ``__main__.py``). All their help texts, subcommands
included, are produced by one subprocess that runs each command in turn with ``--help``, so the
heavy imports (torch, transformers, coremltools) are paid once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMAND_DIRS = ("training", "conversion", "arbiter", "scripts", "benches")
# A repo path: one of the tracked top-level directories, then path characters, ending in a word
# character (so "configs/toy.yaml." loses the full stop and placeholders like "<name>" stop it).
PATH_PATTERN = re.compile(
    r"(?<![\w./-])((?:configs|assets|benches|scripts|training|conversion|arbiter|tests)/[\w./-]*\w)"
)
_MAIN_BLOCK = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)

# Runs every command given as JSON on argv[1] with --help, in this one process; prints
# {command: {"code": exit code or error, "help": text}}. print_help also prints every subcommand's help.
_HELP_RUNNER = r"""
import argparse, contextlib, io, json, runpy, sys, warnings

warnings.simplefilter("ignore")
_print_help = argparse.ArgumentParser.print_help

def print_help(self, file=None):
    _print_help(self, file)
    for action in self._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                print(f"\n[subcommand {name}]", file=file)
                print_help(sub, file)

argparse.ArgumentParser.print_help = print_help
results = {}
for command in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [command, "--help"]
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            if command.endswith(".py"):
                runpy.run_path(command, run_name="__main__")
            else:
                runpy.run_module(command, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        code = f"{type(exc).__name__}: {exc}"
    results[command] = {"code": code, "help": out.getvalue()}
print(json.dumps(results))
"""


def _is_module(path: Path) -> bool:
    """Importable as a module from the repository root (every directory on the way is a package)."""
    return all(
        (parent / "__init__.py").is_file()
        for parent in path.parents
        if parent != REPO and REPO in parent.parents
    )


def discover_commands() -> list[str]:
    """``pkg.module`` (run with ``-m``) or ``dir/file.py`` (run as a file) of every command."""
    commands = []
    for top in COMMAND_DIRS:
        for path in sorted((REPO / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            if path.name != "__main__.py" and not _MAIN_BLOCK.search(path.read_text(encoding="utf-8")):
                continue
            relative = path.relative_to(REPO)
            if not _is_module(path):
                commands.append(relative.as_posix())
                continue
            parts = relative.with_suffix("").parts
            commands.append(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    return commands


def named_paths(text: str) -> list[str]:
    """Repository paths named in ``text``, each once, in order."""
    return list(dict.fromkeys(PATH_PATTERN.findall(text)))


def missing(paths: list[str]) -> list[str]:
    return [path for path in paths if not (REPO / path).exists()]


COMMANDS = discover_commands()


@pytest.fixture(scope="module")
def help_texts() -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_RUNNER, json.dumps(COMMANDS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_commands_are_found() -> None:
    for expected in (
        "training.distill_kd",
        "training.pipeline",
        "conversion.export_onnx",
        "conversion.convert_coreml",
        "arbiter.judge_training.train",
        "scripts.assess_readiness",
        "benches/run_all.py",
    ):
        assert expected in COMMANDS
    assert len(COMMANDS) == len(set(COMMANDS))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_only_existing_paths(help_texts: dict[str, dict[str, object]], command: str) -> None:
    result = help_texts[command]
    assert result["code"] in (0, None), f"{command} --help: exit {result['code']}"
    text = str(result["help"])
    assert text.lstrip().startswith("usage:"), f"{command} --help printed no usage"
    assert missing(named_paths(text)) == [], f"{command} --help names paths that do not exist"


def test_readme_names_only_existing_paths() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert named_paths(text), "the README names no repository path: is the pattern broken?"
    assert missing(named_paths(text)) == []


def test_path_pattern() -> None:
    text = (
        "Example: --config configs/toy_kd.yaml. See assets/teacher, benches/results/<name>.json, "
        "`scripts/assess_readiness.py` and (training/kd/config.py); not runs/toy or myconfigs/x.yaml"
    )
    assert named_paths(text) == [
        "configs/toy_kd.yaml",
        "assets/teacher",
        "benches/results",
        "scripts/assess_readiness.py",
        "training/kd/config.py",
    ]
    assert missing(["configs/no_such.yaml", "configs/toy.yaml"]) == ["configs/no_such.yaml"]


def test_toy_kd_config_is_the_pipelines_kd_student() -> None:
    """configs/toy_kd.yaml (named by distill_kd --help) is make distill's KD student run on its own."""
    from training.kd.config import load_config
    from training.pipeline import load_pipeline_config, student_config

    standalone = load_config(REPO / "configs" / "toy_kd.yaml").model_dump()
    train, val = standalone["data"]["train"], standalone["data"]["val"][0]
    pipeline = load_pipeline_config(REPO / "configs" / "toy.yaml")
    in_pipeline = student_config(pipeline, Path("runs/toy"), "kd", True, train, val).model_dump()
    differences = {key for key in standalone if standalone[key] != in_pipeline[key]}
    assert differences == {"out_dir", "resume"}  # its own run directory, and it resumes when rerun
    for path in (standalone["tokenizer"], standalone["teacher"]["path"]):
        assert (REPO / path).is_dir()
