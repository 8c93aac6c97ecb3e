"""The parser's LALR tables, kept between runs in the user's cache directory: used when
present, rebuilt when absent, stale or broken, never needed (off, or unwritable)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from cnndsl.syntax import parser

RESNET = (ROOT / "architectures" / "resnet50.arch").read_text()


def _fresh(monkeypatch, folder) -> object:
    """A parser made now (not the process's memoised one), with the cache in `folder`."""
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(folder))
    return parser._parser.__wrapped__()


def _tree(p) -> object:
    return p.parse(RESNET)


def test_first_use_writes_the_tables_later_uses_read_them(monkeypatch, tmp_path):
    built = _fresh(monkeypatch, tmp_path)
    [cached] = tmp_path.glob("parser-*.pickle")
    assert not list(tmp_path.glob(".*"))  # written atomically: no temp file left
    loaded = _fresh(monkeypatch, tmp_path)
    assert _tree(loaded) == _tree(built)
    assert list(tmp_path.glob("parser-*.pickle")) == [cached]


def test_broken_or_stale_tables_are_rebuilt(monkeypatch, tmp_path):
    reference = _tree(_fresh(monkeypatch, tmp_path / "ref"))
    (tmp_path / "parser-0123456789abcdef0123.pickle").write_bytes(b"tables of an older grammar")
    _fresh(monkeypatch, tmp_path)
    [current] = tmp_path.glob("parser-*.pickle")
    assert current.name != "parser-0123456789abcdef0123.pickle"  # the stale one is gone
    current.write_bytes(b"\x80\x04 truncated")
    assert _tree(_fresh(monkeypatch, tmp_path)) == reference
    assert current.read_bytes() != b"\x80\x04 truncated"


def test_cache_off_or_unwritable(monkeypatch, tmp_path):
    reference = _tree(_fresh(monkeypatch, tmp_path / "ref"))
    monkeypatch.setenv("CNNDSL_CACHE_DIR", "")
    assert _tree(parser._parser.__wrapped__()) == reference
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _tree(_fresh(monkeypatch, blocker / "cnndsl")) == reference


def test_a_grammar_change_gets_its_own_tables(monkeypatch, tmp_path):
    """The name hashes the grammar text: another grammar never reads these tables."""
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(tmp_path))
    a = parser._cache_file("start: \"a\"")
    b = parser._cache_file("start: \"b\"")
    assert a != b and a.parent == b.parent


def test_the_command_line_uses_the_cache(tmp_path):
    """Two runs of `cnndsl check`: the first writes the tables, the second reads them (and
    gives the same output)."""
    env = dict(os.environ, CNNDSL_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "cnndsl", "check", "architectures/resnet50.arch"]
    first = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    [cached] = tmp_path.glob("parser-*.pickle")
    stamp = cached.stat().st_mtime_ns
    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == second.returncode == 0 and first.stdout == second.stdout
    assert cached.stat().st_mtime_ns == stamp  # read, not rewritten
