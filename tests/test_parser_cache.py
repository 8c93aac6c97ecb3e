"""The parser's LALR tables ship with the package (cnndsl/syntax/_lalr.py, plain data
generated from the grammar); nothing is read from, or written to, a cache directory,
and nothing is unpickled."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys

import lark
import pytest
from lark import Lark

from conftest import ROOT
from cnndsl.syntax import _lalr, tables

CORPUS = sorted((ROOT / "architectures").rglob("*.arch"))


def _grammar() -> str:
    return tables.grammar_path().read_text(encoding="utf-8")


def test_shipped_tables_are_those_of_the_grammar():
    """Fails after a grammar change until `python -m cnndsl.syntax.tables` is run."""
    assert _lalr.KEY == tables.grammar_key(_grammar()), "run `python -m cnndsl.syntax.tables`"


def test_shipped_tables_are_used_not_rebuilt(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("built the tables from the grammar")
    monkeypatch.setattr(Lark, "__init__", no_build)
    assert tables.load_parser().parse("3x3 conv, 64\n").data == "start"


@pytest.mark.timeout(60)
def test_shipped_tables_parse_as_the_grammar_does():
    shipped, built = tables.load_parser(), Lark(_grammar(), **tables.OPTIONS)
    for path in CORPUS:
        text = path.read_text(encoding="utf-8")
        try:
            expected = built.parse(text)
        except lark.exceptions.UnexpectedInput as exc:
            with pytest.raises(type(exc)):
                shipped.parse(text)
            continue
        assert shipped.parse(text) == expected, path.name


def test_tables_of_another_grammar_are_not_used(monkeypatch):
    """Stale tables (another grammar, another lark) are ignored: the parser is built now."""
    monkeypatch.setattr(_lalr, "KEY", "0" * 64)
    built = []
    real_init = Lark.__init__
    monkeypatch.setattr(Lark, "__init__", lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    assert tables.load_parser().parse("relu\n").data == "start" and built


def test_the_generated_module_is_plain_data():
    source = tables.tables_source(_grammar())
    namespace: dict = {}
    exec(compile(source, "_lalr.py", "exec"), {"__builtins__": {}}, namespace)  # no builtins needed: literals only
    assert set(namespace) == {"__doc__", "KEY", "DATA", "MEMO"} and namespace["KEY"] == _lalr.KEY


def _old_cache_name(grammar: str) -> str:
    """Where cnndsl <= this fix looked for its pickled tables."""
    key = f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}"
    return f"parser-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pickle"


class _Pwn:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.timeout(60)
def test_a_hostile_cache_file_runs_no_code(tmp_path):
    """A pickle planted where the tables used to be cached would run code when loaded."""
    marker = tmp_path / "PWNED"
    hostile = pickle.dumps(_Pwn(str(marker)))
    folders = [tmp_path / "cache" / "cnndsl", tmp_path / "home" / ".cache" / "cnndsl", tmp_path / "explicit"]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / _old_cache_name(_grammar())).write_bytes(hostile)
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"),
               HOME=str(tmp_path / "home"), CNNDSL_CACHE_DIR=str(tmp_path / "explicit"))
    done = subprocess.run([sys.executable, "-m", "cnndsl", "check", "architectures/resnet50.arch"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert [sorted(p.name for p in f.iterdir()) for f in folders] == [[_old_cache_name(_grammar())]] * 3  # nothing written
