"""Issue 10, the syntax layer: huge literals, deep expressions, CR line ends, rendering
many diagnostics, large inputs, and every syntax error of a file (items 2, 3, 5, 8, 9, 23;
item 18 is in test_parser_cache.py)."""

from __future__ import annotations

import inspect
import sys
import time

import pytest

import cnndsl
from cnndsl.diagnostics import CnnDslError, Diagnostic
from cnndsl.source import Source, Span
from cnndsl.syntax.build import MAX_EXPR_DEPTH, MAX_NUMBER_DIGITS
from cnndsl.syntax.lalr import MAX_SYNTAX_ERRORS
from cnndsl.syntax.lexer import MAX_TOKENS
from cnndsl.syntax.parser import parse


def _errors(text: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(CnnDslError) as info:
        parse(Source("t.arch", text))
    return info.value.diagnostics


def _where(d: Diagnostic) -> tuple[int, int, int]:
    return d.span.line, d.span.col, d.span.end_col


# -- 2: integer literals longer than Python converts -------------------------------------

@pytest.mark.parametrize("line, col", [("FC {n}", 4), ("{n}x3 conv, 4", 1), ("3x{n} max pool", 1), ("{n} conv, 4", 1),
                                       ("3x3 conv, 4, stride {n}", 21), ("let k = -{n}", 9)])
def test_a_number_of_5000_digits_is_refused_where_it_is(line, col):
    (d,) = _errors("input 8x8x3\n" + line.format(n="9" * 5000) + "\n")
    assert d.message == f"number too long: 5,000 digits (at most {MAX_NUMBER_DIGITS:,})"
    assert d.span.line == 2 and d.span.col == col and d.span.end_col - col >= 5000


def test_a_number_of_5000_digits_through_the_whole_pipeline():
    with pytest.raises(CnnDslError) as info:
        cnndsl.loads("input 8x8x3\nFC " + "1" + "0" * 4999 + "\n")
    assert "number too long" in info.value.diagnostics[0].message


def test_a_number_at_the_digit_limit_is_read_exactly():
    (_, line) = parse(Source("t.arch", "input 8x8x3\nFC " + "7" * MAX_NUMBER_DIGITS + "\n")).statements
    assert line.unit.arg.value == int("7" * MAX_NUMBER_DIGITS)


# -- 3: deep expressions -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["FC " + "1+" * 500 + "1", "let k = " + "-" * 5000 + "1", "FC " + "2*" * 20_000 + "1",
                                  "3x3 conv, 4, stride " + "1-" * 1000 + "1"])
def test_an_expression_too_deep_is_refused_not_a_recursion_error(text):
    with pytest.raises(CnnDslError) as info:
        cnndsl.loads("input 8x8x3\n" + text + "\n")
    (d,) = info.value.diagnostics
    assert d.message == f"expression nested more than {MAX_EXPR_DEPTH} operators deep" and d.span.line == 2


def test_an_expression_at_the_depth_limit_is_accepted():
    net = cnndsl.loads("input 8x8x3\nlet k = " + "1+" * MAX_EXPR_DEPTH + "0\nFC k\n")
    assert net.report.totals.params == 8 * 8 * 3 * MAX_EXPR_DEPTH + MAX_EXPR_DEPTH


def test_parsing_never_recurses(monkeypatch):
    """Long lines, long files, deep negations and errors parse in a few frames of stack."""
    texts = ["input 8x8x3\n" + "relu\n" * 5000, "input 8x8x3\n3x3 conv, 4" + ", stride 1" * 3000 + "\n",
             "let k = " + "-" * 3000 + "1\n", "FC 1" + "+1" * 3000 + "\n", "relu relu $\n" * 50]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)
    try:
        for text in texts:
            try:
                parse(Source("t.arch", text))
            except CnnDslError:
                pass
    finally:
        sys.setrecursionlimit(limit)


# -- 5: CR line ends ---------------------------------------------------------------------

@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_cr_line_ends_are_located_as_in_a_file(end):
    (d,) = _errors("c1: " + end)
    assert _where(d) == (1, 5, 6) == _where(_errors("c1: \n")[0])  # one past "c1: ", not two
    text = "input 8x8x3\n3x3 conv, 4 $\nrelu\n"
    (crlf,) = _errors(text.replace("\n", end))
    assert _where(crlf) == (2, 13, 14) and "\r" not in crlf.render()


def test_a_lone_cr_ends_a_line_as_python_reads_files(tmp_path):
    text = "input 8x8x3\r3x3 conv, 4\rFC 2\r"
    (tmp_path / "mac.arch").write_bytes(text.encode())
    from_file, from_string = cnndsl.load(tmp_path / "mac.arch"), cnndsl.loads(text)
    assert from_file.report.totals.params == from_string.report.totals.params == 3 * 3 * 3 * 4 + 4 + 8 * 8 * 4 * 2 + 2


def test_characters_that_break_a_line_on_screen_are_shown_as_spaces():
    """\\f and \\u2028 are one column each, as a tab is: the carets stay under the culprit."""
    (d,) = _errors("input 3x3x3\n\f3x3 conv, 4 \u2028\n")
    assert (d.span.line, d.span.col) == (2, 14)
    line, carets = d.span.render().split("\n")
    assert not set("\f\u2028") & set(line) and carets.index("^") == line.index("|") + 2 + 13


# -- 8: rendering many diagnostics -------------------------------------------------------

@pytest.mark.timeout(30)
def test_16k_diagnostics_render_in_linear_time():
    n = 16_000
    source = Source("big.arch", "".join(f"3x3 conv, {i}\n" for i in range(n)))
    error = CnnDslError(Diagnostic(Span(source, i, 11, i, 12), "bad") for i in range(1, n + 1))
    start = time.perf_counter()
    text = error.render()
    assert time.perf_counter() - start < 1.0  # 17 s when each line re-split the whole text
    assert text.count("\n   1 | 3x3 conv, 0\n") == 1 and text.endswith(f"{n} errors")
    assert f"{n:>4} | 3x3 conv, {n - 1}" in text


# -- 9: large inputs ---------------------------------------------------------------------

BIG = {
    "100k relu lines": "input 224x224x3\n" + "relu\n" * 100_000,
    "100k conv lines": "input 224x224x3\n" + "3x3 conv, 8\n" * 100_000,
    "100k let lines": "".join(f"let k{i} = {i}\n" for i in range(100_000)),
    "a 1 MB options line": "input 8x8x3\n3x3 conv, 8" + ", stride 1" * 100_000 + "\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BIG)
def test_a_large_input_is_refused_at_the_token_limit_quickly(name):
    start = time.perf_counter()
    (d,) = _errors(BIG[name])
    assert time.perf_counter() - start < 3.0
    assert d.message == f"file too long: more than {MAX_TOKENS:,} tokens (words, numbers, symbols)"
    assert d.span.line > 1000 or d.span.col > 100_000  # at the token over the limit, far into the file


@pytest.mark.timeout(60)
def test_a_file_under_the_token_limit_parses_quickly():
    n = MAX_TOKENS // 5 - 2  # 5 tokens a line: 3x3, conv, ',', 8, end of line
    start = time.perf_counter()
    module = parse(Source("big.arch", "input 8x8x3\n" + "3x3 conv, 8\n" * n))
    assert time.perf_counter() - start < 3.0 and len(module.statements) == n + 1


# -- 23: every syntax error of a file ----------------------------------------------------

def test_three_syntax_errors_are_three_errors():
    text = "input 8x8x3\n3x3 conv, 4 4\nrelu\nmax pool, ,\nFC 10 $\n"
    assert [(d.span.line, d.span.col) for d in _errors(text)] == [(2, 13), (4, 9), (5, 7)]


@pytest.mark.parametrize("text, where", [
    ("input 8x8x3\n[3x3 conv, 4)\nrelu\nFC 10\n", [(2, 13)]),  # the broken group swallows nothing after it
    ("input 8x8x3\nblock b() {\n 3x3 conv, 4 4\n relu x\n}\nb()\nFC 10\n", [(3, 14), (4, 8)]),
    ("input 8x8x3\n[relu\n relu relu)\n 3x3 conv, 8\n]\nconcat {\n relu\n", [(3, 11), (6, 8)]),
    ("c1:\nc2:\n", [(1, 4), (2, 4)]),
])
def test_recovery_reports_each_broken_line_once(text, where):
    assert [(d.span.line, d.span.col) for d in _errors(text)] == where


def test_at_most_so_many_syntax_errors_are_reported():
    diags = _errors("relu relu $\n" * (MAX_SYNTAX_ERRORS + 50))
    assert len(diags) == MAX_SYNTAX_ERRORS
    assert diags[-1].notes[-1].message == f"stopped after {MAX_SYNTAX_ERRORS} syntax errors; fix these first"
