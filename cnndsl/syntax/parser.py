"""The parser: lark (LALR) over grammars/cnndsl.lark, then a transformer to the AST.

Lark's exceptions are converted to diagnostics here, at the boundary; nothing
from lark escapes.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from cnndsl.diagnostics import CnnDslError, Diagnostic, Note
from cnndsl.source import Source, Span
from cnndsl.syntax import ast

MAX_NESTING = 32
MAX_SOURCE_CHARS = 5_000_000


def grammar_path() -> Path:
    """Where cnndsl.lark lives: inside the installed package, or grammars/ in a checkout."""
    try:
        packaged = resources.files("cnndsl.grammars").joinpath("cnndsl.lark")
        if packaged.is_file():
            return Path(str(packaged))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "grammars" / "cnndsl.lark"


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse(source: Source) -> ast.Module:
    """Parse a source into an AST, or raise CnnDslError with located diagnostics."""
    _check_limits(source)
    try:
        tree = _parser().parse(source.text)
    except UnexpectedInput as exc:
        raise CnnDslError([_syntax_diagnostic(source, exc)]) from None
    try:
        return ast.Module(source, _ToAst(source).transform(tree))
    except VisitError as exc:
        raise exc.orig_exc from None


def _check_limits(source: Source) -> None:
    """Reject input whose nesting or size would exhaust the parser, with a span."""
    if len(source.text) > MAX_SOURCE_CHARS:
        span = Span(source, 1, 1, 1, 2)
        raise CnnDslError([Diagnostic(span, f"file too large ({len(source.text):,} characters; at most {MAX_SOURCE_CHARS:,})")])
    depth, line, col = 0, 1, 0
    for ch in source.text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch in "[({":
            depth += 1
            if depth > MAX_NESTING:
                span = Span(source, line, col, line, col + 1)
                raise CnnDslError([Diagnostic(span, f"brackets nested more than {MAX_NESTING} deep",
                                              (Note("flatten the structure, or define a named block and use it"),))])
        elif ch in "])}":
            depth = max(0, depth - 1)


_TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "COMMA": "','", "SEMICOLON": "';'",
    "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'",
    "NAME": "a word", "NUMBER": "a number", "SIGNED": "a number", "SIZE": "a size like 3x3",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "EQUAL": "'='", "COLON": "':'",
    "X": "'x' (repeat)", "__ANON_0": "'->'", "LET": "'let'", "BLOCK": "'block'",
}


def _describe(expected: set[str]) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t.lower()) for t in expected})
    return ", ".join(words[:8]) + (", ..." if len(words) > 8 else "")


def _syntax_diagnostic(source: Source, exc: UnexpectedInput) -> Diagnostic:
    line, col = max(1, exc.line or 1), max(1, exc.column or 1)
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        message = f"unexpected character {char!r}"
        width = 1
    elif isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        message, width = "unexpected end of file", 1
        line, col = _end_position(source)
    elif isinstance(exc, UnexpectedToken):
        shown = "end of line" if exc.token.type == "_NL" else repr(str(exc.token))
        message, width = f"unexpected {shown}", max(1, len(str(exc.token).rstrip()))
    elif isinstance(exc, UnexpectedEOF):
        message, width = "unexpected end of file", 1
        line, col = _end_position(source)
    else:  # pragma: no cover - lark has no other UnexpectedInput subclasses
        message, width = "syntax error", 1
    expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set()
    notes = (Note(f"expected {_describe(set(expected))}"),) if expected else ()
    return Diagnostic(Span(source, line, col, line, col + width), message, notes)


def _end_position(source: Source) -> tuple[int, int]:
    lines = source.text.splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def _span(source: Source, meta) -> Span:
    return Span(source, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(source: Source, tok: Token) -> Span:
    return Span(source, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Each method builds one AST node from one grammar rule."""

    def __init__(self, source: Source):
        super().__init__()
        self.src = source

    def start(self, meta, stmts):
        return tuple(stmts)

    def body(self, meta, stmts):
        return tuple(stmts)

    def let(self, meta, c):
        return ast.Let(str(c[0]), c[1], _span(self.src, meta))

    def rule(self, meta, c):
        return ast.Rule(str(c[0]), tuple(c[1:]), _span(self.src, meta))

    def rule_step(self, meta, c):
        return ast.RuleStep(c[0], tuple(c[1:]), _span(self.src, meta))

    def block_def(self, meta, c):
        return ast.BlockDef(str(c[0]), c[1] or (), c[2], _span(self.src, meta))

    def params(self, meta, names):
        return tuple(str(n) for n in names)

    def line(self, meta, c):
        label, unit, repeat, *options = c
        return ast.Line(label, unit, repeat, tuple(options), _span(self.src, meta))

    def label(self, meta, c):
        return str(c[0])

    def repeat(self, meta, c):
        return c[0]

    def head(self, meta, c):
        if len(c) == 1:  # the bare-size alternative: `1x1`
            return ast.Head(self._size(c[0]), ("conv",), None, _span(self.src, meta))
        size, words, arg = c
        return ast.Head(size and self._size(size), words, arg, _span(self.src, meta))

    def head_1d(self, meta, c):
        size, words, arg = c
        if not str(size).isdigit():
            raise CnnDslError([Diagnostic(_tok_span(self.src, size), f"a kernel size must be a whole number, not {size}")])
        span = _tok_span(self.src, size)
        return ast.Head(ast.SizeLit((int(str(size)),), span), words, arg, _span(self.src, meta))

    def words(self, meta, c):
        return tuple(str(w) for w in c)

    def group(self, meta, lines):
        return ast.Group(tuple(lines), _span(self.src, meta))

    def call(self, meta, c):
        return ast.Call(str(c[0]), c[1] or (), _span(self.src, meta))

    def args(self, meta, exprs):
        return tuple(exprs)

    def parallel(self, meta, c):
        return ast.Parallel(str(c[0]), c[1], _span(self.src, meta))

    def branches(self, meta, lines):
        return tuple(lines)

    def kw_option(self, meta, c):
        value = c[1]
        if isinstance(value, Token):
            value = ast.Var(str(value), _tok_span(self.src, value))
        return ast.KwOption(str(c[0]), value, _span(self.src, meta))

    def pos_option(self, meta, c):
        return ast.PosOption(c[0], _span(self.src, meta))

    def size_arg(self, meta, c):
        return self._size(c[0])

    def num(self, meta, c):
        text = str(c[0])
        value = float(text) if any(ch in text for ch in ".eE") else int(text)
        return ast.Num(value, _span(self.src, meta))

    def var(self, meta, c):
        return ast.Var(str(c[0]), _span(self.src, meta))

    def neg(self, meta, c):
        return ast.Neg(c[0], _span(self.src, meta))

    def _binop(op):  # noqa: N805 - a method factory evaluated in the class body
        def build(self, meta, c):
            return ast.BinOp(op, c[0], c[1], _span(self.src, meta))
        return build

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")

    def _size(self, tok: Token) -> ast.SizeLit:
        return ast.SizeLit(tuple(int(d) for d in str(tok).split("x")), _tok_span(self.src, tok))
