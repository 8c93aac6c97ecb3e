"""Lark's syntax errors in the user's words: what was found, what was expected, and
which bracket is at fault (no lark token names reach the user)."""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cnndsl.diagnostics import Diagnostic, Note
from cnndsl.source import Source, Span

_CLOSE_OF = {"[": "]", "(": ")", "{": "}"}
_BRACKET_OR_COMMENT = re.compile(r"[\[\](){}]|#[^\n]*")

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

Bracket = tuple[str, int, int]  # the character, its line and column


class Brackets:
    """The brackets open at an offset of a source, comments skipped, innermost last.
    Offsets must be asked in increasing order: the scan goes on from the last one, so
    the N errors of one file cost one pass over it."""

    def __init__(self, source: Source):
        self.source, self.pos, self.stack = source, 0, []

    def open_at(self, offset: int) -> list[Bracket]:
        if offset < self.pos:  # a question out of order: start again
            self.pos, self.stack = 0, []
        stack = self.stack
        for m in _BRACKET_OR_COMMENT.finditer(self.source.text, self.pos, offset):
            ch = m.group()
            if ch in _CLOSE_OF:
                stack.append((ch, *self.source.position(m.start())))
            elif stack and _CLOSE_OF[stack[-1][0]] == ch:
                stack.pop()
        self.pos = max(self.pos, offset)
        return list(stack)


def nesting_problem(source: Source, limit: int) -> Diagnostic | None:
    """The first bracket nested more than `limit` deep, if any."""
    stack: list[str] = []
    for m in _BRACKET_OR_COMMENT.finditer(source.text):
        ch = m.group()
        if ch in _CLOSE_OF:
            stack.append(ch)
            if len(stack) > limit:
                line, col = source.position(m.start())
                return Diagnostic(Span(source, line, col, line, col + 1), f"brackets nested more than {limit} deep",
                                  (Note("flatten the structure, or define a named block and use it"),))
        elif stack and _CLOSE_OF[stack[-1]] == ch:
            stack.pop()
    return None


def _describe(expected: set[str], open_brackets: list[Bracket]) -> str:
    """The expected tokens in words; a closing bracket only when that bracket is open."""
    inner = open_brackets[-1][0] if open_brackets else None
    kept = [t for t in expected if t not in _CLOSING or _CLOSING[t] == inner]
    rank = {t: i for i, t in enumerate(_TOKEN_ORDER)}
    kept.sort(key=lambda t: (rank.get(t, len(rank)), t))
    words = list(dict.fromkeys(_TOKEN_WORDS.get(t, "'" + t.lower() + "'") for t in kept))
    return ", ".join(words[:6]) + (", ..." if len(words) > 6 else "")


def at_end(exc: UnexpectedInput) -> bool:
    return isinstance(exc, UnexpectedEOF) or isinstance(exc, UnexpectedToken) and exc.token.type == "$END"


def syntax_diagnostic(source: Source, exc: UnexpectedInput, brackets: Brackets) -> Diagnostic:
    """One diagnostic in the user's words for lark's exception (no lark token names)."""
    end = at_end(exc)
    offset = len(source.text) if end or exc.pos_in_stream is None else exc.pos_in_stream
    open_brackets = brackets.open_at(offset)
    if end and open_brackets:
        return unclosed(source, open_brackets[-1])
    if isinstance(exc, UnexpectedToken) and not end:
        special = _bracket_or_comma(source, exc, open_brackets)
        if special is not None:
            return special
    line, col = _clamp(source, max(1, exc.line or 1), max(1, exc.column or 1))
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        message, width = f"unexpected character {char!r}", 1
    elif end:
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


def unclosed(source: Source, bracket: Bracket) -> Diagnostic:
    char, line, col = bracket
    return Diagnostic(Span(source, line, col, line, col + 1), f"'{char}' is never closed",
                      (Note(f"add '{_CLOSE_OF[char]}' where it should end"),))


def _bracket_or_comma(source: Source, exc: UnexpectedToken, open_brackets) -> Diagnostic | None:
    """Clearer words for a closing bracket that closes nothing, and for a ',' with nothing after it."""
    tok = exc.token
    if tok.type in _CLOSING:
        span = tok_span(source, tok)
        if not open_brackets:
            return Diagnostic(span, f"unmatched '{tok}'", (Note(f"there is no '{_CLOSING[tok.type]}' open here"),))
        char, line, col = open_brackets[-1]
        if char != _CLOSING[tok.type]:
            return Diagnostic(span, f"'{tok}' does not close the '{char}' still open",
                              (Note(f"'{char}' opened here; close it with '{_CLOSE_OF[char]}' first",
                                    Span(source, line, col, line, col + 1)),))
    last = (getattr(exc, "token_history", None) or [None])[-1]
    if last is not None and last.type == "COMMA" and tok.type in ("_NL", "COMMA", "SEMICOLON", *_CLOSING):
        return Diagnostic(tok_span(source, last), "expected an option after ','",
                          (Note("remove the ',' or write an option after it, e.g. `stride 2`"),))
    return None


def _clamp(source: Source, line: int, col: int) -> tuple[int, int]:
    """A column at most one past the line's last character (where a missing thing goes)."""
    return line, min(col, len(source.line_text(line)) + 1)


def _end_position(source: Source) -> tuple[int, int]:
    line = source.text.removesuffix("\n").count("\n") + 1
    return line, len(source.line_text(line)) + 1


def tok_span(source: Source, tok: Token) -> Span:
    return Span(source, tok.line, tok.column, tok.end_line, tok.end_column)
