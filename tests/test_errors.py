"""Broken architectures: `cnndsl check` must report each problem where it is, clearly.

Every architectures/invalid/NAME.arch says what is wrong on its first line and where
the first diagnostic must point on its second (`# expect: LINE:COL`); a third line
`# errors: N` gives the number of diagnostics when there is more than one. The full
stderr is compared with tests/golden/invalid/NAME.txt (`pytest --update-golden`
rewrites the golden files; review the diff before committing it).
"""

from __future__ import annotations

import re
import time

import pytest

import cnndsl
from conftest import ROOT

INVALID = sorted((ROOT / "architectures" / "invalid").glob("*.arch"))
GOLDEN = ROOT / "tests" / "golden" / "invalid"


def _header(path) -> tuple[int, int, int]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert re.match(r"# \S", lines[0]), f"{path.name}: the first line must say what is wrong"
    where = re.fullmatch(r"# expect: (\d+):(\d+)", lines[1])
    assert where, f"{path.name}: the second line must be `# expect: LINE:COL`"
    count = re.fullmatch(r"# errors: (\d+)", lines[2])
    return int(where[1]), int(where[2]), int(count[1]) if count else 1


def test_enough_invalid_files():
    assert len(INVALID) >= 12


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file(path, cli, update_golden):
    line, col, count = _header(path)
    rel = path.relative_to(ROOT).as_posix()
    result = cli("check", rel)
    assert result.code == 1, result.err
    assert result.out == ""
    assert "Traceback" not in result.err and "internal error" not in result.err
    first = result.err.split("\n", 1)[0]
    assert first.startswith(f"{rel}:{line}:{col}: error: "), first
    assert result.err.rstrip().endswith(f"\n{count} error{'s' if count != 1 else ''}")

    golden = GOLDEN / f"{path.stem}.txt"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(result.err, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden.relative_to(ROOT)}; run pytest --update-golden"
    assert result.err == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_through_api(path):
    """The API raises the same diagnostics: one CnnDslError, spans where declared."""
    line, col, count = _header(path)
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.load(path)
    diags = info.value.diagnostics
    assert len(diags) == count
    assert (diags[0].span.line, diags[0].span.col) == (line, col)
    assert all(d.span.col >= 1 and d.notes is not None for d in diags)


def test_every_golden_has_a_file():
    stale = {p.stem for p in GOLDEN.glob("*.txt")} - {p.stem for p in INVALID}
    assert not stale, f"golden files without an .arch: {sorted(stale)}"


@pytest.mark.parametrize("text", [
    "input 32x32x3\n[3x3 conv, 64] x 5000000\n",
    "input 32x32x3\n[[[3x3 conv, 64] x 1000] x 1000] x 1000\n",
    "input 32x32x3\nlet n = 1000\nblock b(n) {\n[1x1 conv, 8] x n\n}\nb(n) x n\n",
    "input 32x32x3\n" + "[" * 40 + "3x3 conv, 8" + "]" * 40 + "\n",
])
def test_huge_inputs_fail_fast(text):
    start = time.perf_counter()
    with pytest.raises(cnndsl.CnnDslError):
        cnndsl.loads(text)
    assert time.perf_counter() - start < 1.0


def test_several_errors_are_all_reported():
    text = "input 32x32x3\n3x3 convv, 64\nFC 10, strid 2\n3x3 conv, 0\n5x5 max pool, stride -2\n"
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text)
    assert [(d.span.line, d.span.col) for d in info.value.diagnostics] == [(2, 1), (3, 8), (4, 11), (5, 22)]


def test_did_you_mean():
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads("input 32x32x3\n3x3 convv, 64\n")
    (diag,) = info.value.diagnostics
    assert "unknown layer 'convv'" in diag.message
    assert any("did you mean 'conv'" in n.message for n in diag.notes)


def test_doesnt_fit_shows_the_arithmetic():
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads("input 7x7x3\n3x3 conv, 8, stride 3, pad 0\n")
    (diag,) = info.value.diagnostics
    assert "(7 - 3)/3 + 1 = 2.33" in diag.message
    assert any(n.message.startswith("fix:") for n in diag.notes)


@pytest.mark.parametrize("text, where, words", [
    ("input 3x3x3\n[3x3 conv, 64)\n", (2, 14), "')' does not close the '['"),
    ("input 3x3x3\nconcat {\n3x3 conv, 4\n", (2, 8), "'{' is never closed"),
    ("input 3x3x3\n3x3 conv, 4]\n", (2, 12), "unmatched ']'"),
    ("input 3x3x3\n3x3 conv, , 4\n", (2, 9), "expected an option after ','"),
    ("input 3x3x3  # a [ in a comment is no bracket\n3x3 conv, 4\n", None, None),
    ("input 3x3x3\nrule = conv -> -> relu\n", (2, 16), "unexpected '->'"),
    ("input 3x3x3\n3x3 conv, 16*(k+1\n", (2, 18), "unexpected end of line"),
    ("input 3x3x3\n\f3x3 conv, 4 $\n", (2, 14), "unexpected character '$'"),
])
def test_syntax_messages(text, where, words):
    """Syntax errors speak the user's words (never lark's token names) and point at the culprit."""
    if where is None:
        assert cnndsl.loads(text).report.totals.params == 3 * 3 * 3 * 4 + 4
        return
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text)
    (diag,) = info.value.diagnostics
    assert (diag.span.line, diag.span.col) == where
    assert words in diag.message
    rendered = info.value.render()
    assert not re.search(r"\b(__ANON|RSQB|LSQB|RPAR|LPAR|_NL|\$END|COMMA|NAME|SIGNED)\b", rendered), rendered


def test_repeated_block_errors_are_reported_once():
    text = "input 32x32x3\nblock b() {\n3x3 convv, 8\n}\nb() x 3\n"
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text)
    assert len(info.value.diagnostics) == 1
