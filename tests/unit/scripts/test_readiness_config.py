"""[tool.readiness] loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.readiness.config import (
    DEFAULT_HARD_CONDITIONS,
    DEFAULT_WEIGHTS,
    Thresholds,
    load_config,
    module_name_of,
    parse_config,
    resolve_module,
)
from scripts.readiness.errors import ReadinessError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for path in ("pkg/__init__.py", "pkg/core.py", "pkg/cli.py", "src/lib/__init__.py", "src/lib/io.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    return tmp_path


def test_defaults_without_pyproject_or_section(root: Path) -> None:
    config = load_config(root)
    assert config.targets == ()
    assert config.weights == DEFAULT_WEIGHTS
    assert config.hard_conditions == DEFAULT_HARD_CONDITIONS
    assert config.fail_under is None
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_config(root).path == root / "pyproject.toml"


def test_full_section(root: Path) -> None:
    (root / "pyproject.toml").write_text(
        """
[tool.readiness]
fail_under = 55
hard_conditions = ["any_test_failure"]
blocker_tags = ["Blocker", "p0"]
todo_phrases = ["interim"]
source = ["pkg"]
todo_paths = ["pkg", "tools"]
[tool.readiness.thresholds]
line = 85
mutation = false
[tool.readiness.critical_modules]
"pkg/core.py" = { branch = 60 }
"lib.io" = {}
"./pkg/missing.py" = {}
[tool.readiness.entry_points]
"pkg.cli:main" = { line = 50 }
[tool.readiness.weights]
tests = 50
mutation = 10
"""
    )
    config = load_config(root)
    assert config.fail_under == 55.0
    assert config.hard_conditions == ("any_test_failure",)
    assert config.blocker_tags == ("blocker", "p0")
    assert config.todo_phrases == ("interim",)
    assert config.source == ("pkg",)
    assert config.todo_paths == ("pkg", "tools")
    core, io, missing, cli = config.targets
    assert (core.path, core.module, core.thresholds) == (
        "pkg/core.py",
        "pkg.core",
        Thresholds(85.0, 60.0, None),
    )
    assert (io.path, io.module) == ("src/lib/io.py", "lib.io")
    assert missing.path is None and missing.module == "pkg.missing"
    assert (cli.kind, cli.path, cli.function, cli.thresholds.line) == (
        "entry_point",
        "pkg/cli.py",
        "main",
        50.0,
    )
    assert set(config.critical_files) == {"pkg/core.py", "src/lib/io.py"}
    assert config.critical_dirs == ("pkg", "src/lib")
    assert config.weights["tests"] == 50.0 and config.weights["mutation"] == 10.0
    assert config.weights["coverage"] == DEFAULT_WEIGHTS["coverage"]


def test_list_form_and_explicit_critical_dirs(root: Path) -> None:
    config = parse_config({"critical_modules": ["pkg/core.py"], "critical_dirs": ["pkg/"]}, root)
    assert config.targets[0].thresholds == Thresholds()
    assert config.critical_dirs == ("pkg",)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"fail_under": 101}, "between 0 and 100"),
        ({"fail_under": "high"}, "expected a number"),
        ({"critcal_modules": {}}, "unknown key"),
        ({"thresholds": {"lines": 3}}, "unknown threshold"),
        ({"thresholds": 80}, "expected a table of thresholds"),
        ({"critical_modules": "pkg/core.py"}, "expected a table"),
        ({"entry_points": {"pkg.cli:": {}}}, "module:function"),
        ({"weights": {"speed": 1}}, "unknown component"),
        ({"weights": {"tests": -1}}, "at least 0"),
        ({"weights": dict.fromkeys(DEFAULT_WEIGHTS, 0)}, "all weights are zero"),
        ({"weights": [1]}, "expected a table"),
        ({"hard_conditions": ["sometimes"]}, "unknown condition"),
        ({"source": "pkg"}, "list of non-empty strings"),
        ({"blocker_tags": [""]}, "list of non-empty strings"),
    ],
)
def test_invalid_sections_are_errors(root: Path, section: dict[str, object], message: str) -> None:
    with pytest.raises(ReadinessError, match=message):
        parse_config(section, root)


def test_unreadable_files_are_errors(root: Path) -> None:
    with pytest.raises(ReadinessError, match="does not exist"):
        load_config(root, root / "nope.toml")
    (root / "bad.toml").write_text("[tool.readiness\n")
    with pytest.raises(ReadinessError, match="cannot read config"):
        load_config(root, root / "bad.toml")
    (root / "scalar.toml").write_text("[tool]\nreadiness = 3\n")
    with pytest.raises(ReadinessError, match="expected a table"):
        load_config(root, root / "scalar.toml")


def test_module_names_and_resolution(root: Path) -> None:
    assert module_name_of("src/lib/io.py") == "lib.io"
    assert module_name_of("pkg/__init__.py") == "pkg"
    assert module_name_of("pkg/core.py") == "pkg.core"
    assert resolve_module(root, "pkg") == "pkg/__init__.py"
    assert resolve_module(root, "lib") == "src/lib/__init__.py"
    assert resolve_module(root, "nope") is None
