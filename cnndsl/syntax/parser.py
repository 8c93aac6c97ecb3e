"""The parser: lark's LALR tables over grammars/cnndsl.lark, building the AST as it goes.

Lark's exceptions are converted to diagnostics here, at the boundary; nothing from
lark escapes. A syntax error does not end the parse: the rest of its line is skipped
and the parser resumes at the next line, so that every line's error is reported
(at most MAX_SYNTAX_ERRORS of them).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from functools import lru_cache

from lark import Lark

from cnndsl.diagnostics import CnnDslError, Diagnostic
from cnndsl.source import Source, Span
from cnndsl.syntax import ast
from cnndsl.syntax.build import AstBuilder
from cnndsl.syntax.errors import nesting_problem
from cnndsl.syntax.lalr import Driver
from cnndsl.syntax.tables import grammar_path, load_parser

__all__ = ["parse", "grammar_path"]

MAX_NESTING = 32
MAX_SOURCE_CHARS = 5_000_000


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return load_parser()


def parse(source: Source) -> ast.Module:
    """Parse a source into an AST, or raise CnnDslError with located diagnostics."""
    _check_limits(source)
    builder = AstBuilder(source)
    driver = Driver(_parser(), source, builder)
    with _gc_paused():
        statements = driver.run()
    if driver.errors or builder.problems:
        raise CnnDslError([*driver.errors, *builder.problems])
    return ast.Module(source, statements)


@contextmanager
def _gc_paused():
    """Parsing allocates a tree of small objects whose growing number made the cyclic
    GC's passes over them superlinear (a third of a 10,000-line parse); they hold no
    cycles, so collection can wait until the parse is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_limits(source: Source) -> None:
    """Reject input whose nesting or size would exhaust the parser, with a span."""
    if len(source.text) > MAX_SOURCE_CHARS:
        span = Span(source, 1, 1, 1, 2)
        raise CnnDslError([Diagnostic(span, f"file too large ({len(source.text):,} characters; at most {MAX_SOURCE_CHARS:,})")])
    problem = nesting_problem(source, MAX_NESTING)
    if problem is not None:
        raise CnnDslError([problem])
