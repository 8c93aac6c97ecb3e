"""The parser: lark (LALR) over grammars/cnndsl.lark, then a transformer to the AST.

Lark's exceptions are converted to diagnostics here, at the boundary; nothing
from lark escapes.

Building the LALR tables takes lark most of a tenth of a second, more than parsing
and checking ResNet-152; they are kept (lark's `Lark.save`) in the user's cache
directory, `$XDG_CACHE_HOME/cnndsl` or `~/.cache/cnndsl` (`$CNNDSL_CACHE_DIR`
overrides it, and an empty value turns the cache off), under a name that hashes the
grammar and the lark and Python versions, so a changed grammar never meets old
tables. A cache that cannot be read or written is rebuilt or skipped, silently.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from cnndsl.diagnostics import CnnDslError, Diagnostic, Note
from cnndsl.files import write_atomic
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
    grammar = grammar_path().read_text(encoding="utf-8")
    cached = _cache_file(grammar)
    if cached is not None:
        try:
            with open(cached, "rb") as f:
                return Lark.load(f)
        except Exception:  # absent, truncated, or from a lark that pickles differently: rebuild
            pass
    parser = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    if cached is not None:
        _save(parser, cached)
    return parser


def _cache_file(grammar: str) -> Path | None:
    """Where the parser built from `grammar` is kept, or None when the cache is off."""
    folder = os.environ.get("CNNDSL_CACHE_DIR")
    if folder is None:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnndsl")
    if not folder:
        return None
    key = hashlib.sha256(f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}".encode()).hexdigest()[:20]
    return Path(folder) / f"parser-{key}.pickle"


def _save(parser: Lark, path: Path) -> None:
    """Write the parser's tables atomically (a reader never sees half a file); give up quietly."""
    tables = io.BytesIO()
    parser.save(tables)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, tables.getvalue())
        for stale in path.parent.glob("parser-*.pickle"):  # tables of older grammars
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass


def parse(source: Source) -> ast.Module:
    """Parse a source into an AST, or raise CnnDslError with located diagnostics."""
    _check_limits(source)
    with _gc_paused():
        try:
            tree = _parser().parse(source.text)
        except UnexpectedInput as exc:
            raise CnnDslError([_syntax_diagnostic(source, exc)]) from None
        try:
            return ast.Module(source, _ToAst(source).transform(tree))
        except VisitError as exc:
            raise exc.orig_exc from None


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
    for stack in _bracket_stacks(source.text, len(source.text)):
        if len(stack) > MAX_NESTING:
            _, line, col = stack[-1]
            raise CnnDslError([Diagnostic(Span(source, line, col, line, col + 1),
                                          f"brackets nested more than {MAX_NESTING} deep",
                                          (Note("flatten the structure, or define a named block and use it"),))])


_CLOSE_OF = {"[": "]", "(": ")", "{": "}"}


def _bracket_stacks(text: str, end: int):
    """The brackets open after each bracket before offset `end`, comments skipped:
    a list of (char, line, col), innermost last. The last one yielded is the state at `end`."""
    stack: list[tuple[str, int, int]] = []
    line, col, comment = 1, 0, False
    yield stack
    for ch in text[:end]:
        col += 1
        if ch == "\n":
            line, col, comment = line + 1, 0, False
        elif comment or ch not in "[](){}#":
            continue
        elif ch == "#":
            comment = True
        elif ch in _CLOSE_OF:
            stack.append((ch, line, col))
            yield stack
        elif stack and _CLOSE_OF[stack[-1][0]] == ch:
            stack.pop()
            yield stack


def _open_brackets(text: str, end: int) -> list[tuple[str, int, int]]:
    stack: list[tuple[str, int, int]] = []
    for stack in _bracket_stacks(text, end):
        pass
    return stack


_TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "COMMA": "','", "SEMICOLON": "';'",
    "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'",
    "NAME": "a word", "NUMBER": "a number", "SIGNED": "a number", "SIZE": "a size like 3x3",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "EQUAL": "'='", "COLON": "':'",
    "X": "'x' (repeat)", "__ANON_0": "'->'", "LET": "'let'", "BLOCK": "'block'",
}
# Most useful first: what ends or continues a line, then values, then operators.
_TOKEN_ORDER = ("_NL", "COMMA", "RSQB", "RPAR", "RBRACE", "SEMICOLON", "NAME", "NUMBER", "SIGNED", "SIZE",
                "X", "LSQB", "LPAR", "LBRACE", "COLON", "$END", "PLUS", "MINUS", "STAR", "SLASH", "EQUAL", "__ANON_0")
_CLOSING = {"RSQB": "[", "RPAR": "(", "RBRACE": "{"}


def _describe(expected: set[str], open_brackets: list[tuple[str, int, int]]) -> str:
    """The expected tokens in words; a closing bracket only when that bracket is open."""
    inner = open_brackets[-1][0] if open_brackets else None
    kept = [t for t in expected if t not in _CLOSING or _CLOSING[t] == inner]
    rank = {t: i for i, t in enumerate(_TOKEN_ORDER)}
    kept.sort(key=lambda t: (rank.get(t, len(rank)), t))
    words = list(dict.fromkeys(_TOKEN_WORDS.get(t, "'" + t.lower() + "'") for t in kept))
    return ", ".join(words[:6]) + (", ..." if len(words) > 6 else "")


def _syntax_diagnostic(source: Source, exc: UnexpectedInput) -> Diagnostic:
    """One diagnostic in the user's words for lark's exception (no lark token names)."""
    line, col = max(1, exc.line or 1), max(1, exc.column or 1)
    at_end = isinstance(exc, UnexpectedEOF) or isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    offset = len(source.text) if at_end or exc.pos_in_stream is None else exc.pos_in_stream
    open_brackets = _open_brackets(source.text, offset)
    if at_end and open_brackets:
        return _unclosed(source, open_brackets[-1])
    if isinstance(exc, UnexpectedToken) and not at_end:
        special = _bracket_or_comma(source, exc, open_brackets)
        if special is not None:
            return special
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        message = f"unexpected character {char!r}"
        width = 1
    elif at_end:
        message, width = "unexpected end of file", 1
        line, col = _end_position(source)
    elif isinstance(exc, UnexpectedToken):
        shown = "end of line" if exc.token.type == "_NL" else repr(str(exc.token))
        message, width = f"unexpected {shown}", max(1, len(str(exc.token).rstrip()))
    else:  # pragma: no cover - lark has no other UnexpectedInput subclasses
        message, width = "syntax error", 1
    expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set()
    notes = (Note(f"expected {_describe(set(expected), open_brackets)}"),) if expected else ()
    return Diagnostic(Span(source, line, col, line, col + width), message, notes)


def _unclosed(source: Source, bracket: tuple[str, int, int]) -> Diagnostic:
    char, line, col = bracket
    return Diagnostic(Span(source, line, col, line, col + 1), f"'{char}' is never closed",
                      (Note(f"add '{_CLOSE_OF[char]}' where it should end"),))


def _bracket_or_comma(source: Source, exc: UnexpectedToken, open_brackets) -> Diagnostic | None:
    """Clearer words for a closing bracket that closes nothing, and for a ',' with nothing after it."""
    tok = exc.token
    if tok.type in _CLOSING:
        span = _tok_span(source, tok)
        if not open_brackets:
            return Diagnostic(span, f"unmatched '{tok}'", (Note(f"there is no '{_CLOSING[tok.type]}' open here"),))
        char, line, col = open_brackets[-1]
        if char != _CLOSING[tok.type]:
            return Diagnostic(span, f"'{tok}' does not close the '{char}' still open",
                              (Note(f"'{char}' opened here; close it with '{_CLOSE_OF[char]}' first",
                                    Span(source, line, col, line, col + 1)),))
    last = (getattr(exc, "token_history", None) or [None])[-1]
    if last is not None and last.type == "COMMA" and tok.type in ("_NL", "COMMA", "SEMICOLON", *_CLOSING):
        return Diagnostic(_tok_span(source, last), "expected an option after ','",
                          (Note("remove the ',' or write an option after it, e.g. `stride 2`"),))
    return None


def _end_position(source: Source) -> tuple[int, int]:
    lines = source.text.removesuffix("\n").split("\n")  # lines as lark counts them: "\n" only
    return len(lines), len(lines[-1].rstrip("\r")) + 1


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
