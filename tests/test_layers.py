"""The import direction the README claims, checked by import-linter (contracts in pyproject.toml):
the project passes, every core module is placed in a layer, and a forbidden import added to a copy
of the sources makes the check fail, naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

FOLDERS = {"ecufl": "ecufl", "kernels": "ecufl/kernels", "server": "ecufl/server", "client": "ecufl/client",
           "proto": "ecufl/proto", "fleet": "ecufl/fleet", "scenarios": "ecufl/scenarios"}


def lint(tree: Path, config: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package in ``tree``. ``-S`` skips site's .pth files, so the editable
    install's finder does not map ``ecufl`` back to the checkout; site-packages is added for
    import-linter itself."""
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "from importlinter.cli import lint_imports\n"
            "sys.exit(lint_imports(config_filename=sys.argv[3], no_cache=True))")
    return subprocess.run([sys.executable, "-S", "-c", code, str(tree), sysconfig.get_paths()["purelib"], str(config)],
                          capture_output=True, text=True, cwd=tree, timeout=300)


@pytest.fixture
def tree(tmp_path) -> Path:
    """The package laid out as the wheel installs it (pyproject.toml: wheel.packages)."""
    for src, dst in FOLDERS.items():
        shutil.copytree(ROOT / src, tmp_path / dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.h", "*.cpp", "*.S", "golden"))
    return tmp_path


def test_the_contracts_hold(tree):
    proc = lint(tree, ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_every_core_module_is_in_a_layer():
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    core = {f"ecufl.{p.stem}" for p in (ROOT / "ecufl").glob("*.py") if p.stem not in ("__init__", "__main__")}
    core |= {f"ecufl.{p.parent.name}" for p in (ROOT / "ecufl").glob("*/__init__.py")}  # subpackages
    assert core - placed == set(), "modules of ecufl/ that no layer names"


@pytest.mark.parametrize("module,line,named", [
    ("ecufl/kernels/params.py", "import ecufl.client.task", "ecufl.kernels is not allowed to import ecufl.client"),
    ("ecufl/server/results.py", "from ecufl.client import task", "ecufl.server is not allowed to import ecufl.client"),
    ("ecufl/data.py", "from ecufl import cli", "is not allowed to import ecufl.cli"),
    ("ecufl/kernels/base.py", "import flwr", "ecufl.kernels is not allowed to import flwr"),
])
def test_a_forbidden_import_breaks_the_check(tree, module, line, named):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    proc = lint(tree, ROOT / "pyproject.toml")
    assert proc.returncode != 0 and named in proc.stdout, proc.stdout[-3000:]
