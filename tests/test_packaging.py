"""The wheel ships the grammar, and an installed cnndsl finds it inside the package
(not in a checkout's grammars/ folder): build a wheel, install it into a temporary
folder, and run cnndsl from there in a fresh interpreter, away from the repository."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.packaging


def _can_build_without_isolation() -> bool:
    """setuptools>=64 in this environment: skip the isolated build env (saves ~10 s)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version
    return int(version("setuptools").split(".")[0]) >= 64


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources, so the build leaves nothing in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "cnndsl", src / "cnndsl", ignore=ignore)
    shutil.copytree(ROOT / "grammars", src / "grammars", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _can_build_without_isolation() else []
    _pip("wheel", ".", "--no-deps", "--no-cache-dir", *isolation, "-w", str(out), cwd=src)
    (built,) = out.glob("cnndsl-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=target)
    return target


def _run_installed(target: Path, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -c code` (or `-m` when code starts with "-m") seeing only the installed copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(target)
    argv = [sys.executable, "-s", *(code.split() if code.startswith("-m") else ["-c", code]), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_wheel_contains_the_grammar_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cnndsl/grammars/cnndsl.lark" in names
    grammar = zipfile.ZipFile(wheel).read("cnndsl/grammars/cnndsl.lark").decode()
    assert grammar == (ROOT / "grammars" / "cnndsl.lark").read_text(encoding="utf-8")
    # every package in the source tree is in the wheel (a package missing from pyproject would not be)
    for init in (ROOT / "cnndsl").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.relative_to(ROOT)} is not in the wheel"
    assert "cnndsl/cli.py" in names
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)


def test_installed_package_finds_its_grammar(installed, tmp_path):
    done = _run_installed(installed, "import cnndsl; from cnndsl.syntax.parser import grammar_path; "
                                     "print(cnndsl.__file__); print(grammar_path())", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module_file, grammar = (Path(line) for line in done.stdout.split())
    assert module_file.is_relative_to(installed), f"imported {module_file}, not the installed copy"
    assert grammar == installed / "cnndsl" / "grammars" / "cnndsl.lark"
    assert grammar.is_file()


def test_installed_cli_checks_a_network(installed, tmp_path):
    arch = tmp_path / "tiny.arch"
    arch.write_text("network Tiny\ninput 32x32x3\nactivation relu\n3x3 conv, 8\nmax pool\nFC 10\n", encoding="utf-8")
    done = _run_installed(installed, "-m cnndsl", "check", arch.name, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["network"] == "Tiny"
    # conv 3*3*3*8 + 8, FC 16*16*8*10 + 10
    assert report["totals"]["params"] == 224 + 20490
