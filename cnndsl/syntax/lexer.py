"""Tokens for the LALR loop: lark's contextual lexer (its regular expressions per parser
state, its keyword rule), with less work per token; for an error it hands over to
lark's own lexer, so that errors read exactly as lark reports them."""

from __future__ import annotations

from lark import Token


MAX_TOKENS = 100_000


class TooManyTokens(Exception):
    """The file has more than MAX_TOKENS tokens; `token` is the first one over."""

    def __init__(self, token: Token):
        super().__init__(token)
        self.token = token


class Lexer:
    """Reads tokens from where `state.line_ctr` stands, in the parser state `stack[-1]`."""

    def __init__(self, contextual, state, text: str, stack: list):
        self.contextual, self.state, self.text, self.stack = contextual, state, text, stack
        self.last: Token | None = None  # the last token given: where the text was read up to
        self.count = 0  # tokens given so far
        self._per_state: dict = {}

    def _rules(self, parser_state):
        lexer = self.contextual.lexers[parser_state]
        scanner = lexer.scanner  # builds lexer.callback (the keyword rule) too
        rules = self._per_state[parser_state] = (scanner._mres, lexer.ignore_types, lexer.newline_types, lexer.callback)
        return rules

    def tokens(self):
        """Tokens to the end of the text; lark's exception at a character no token starts with."""
        counter = self.state.line_ctr
        text, pos, line, line_start = self.text, counter.char_pos, counter.line, counter.line_start_pos
        per_state, stack, size, left = self._per_state, self.stack, len(text), MAX_TOKENS - self.count
        while pos < size:
            mres, ignore, newlines, callback = per_state.get(stack[-1]) or self._rules(stack[-1])
            for mre in mres:
                m = mre.match(text, pos)
                if m:
                    break
            else:
                self._lark_error(pos, line, line_start)
            kind, end = m.lastgroup, m.end()
            if kind in newlines:
                breaks = text.count("\n", pos, end)
                end_line, end_start = line + breaks, text.rfind("\n", pos, end) + 1 if breaks else line_start
            else:
                end_line, end_start = line, line_start
            if kind not in ignore:
                tok = Token(kind, m.group(), pos, line, pos - line_start + 1, end_line, end - end_start + 1, end)
                if kind in callback:
                    tok = callback[kind](tok)
                self.last = tok
                left -= 1
                if left < 0:
                    raise TooManyTokens(tok)
                self.count += 1
                yield tok
            pos, line, line_start = end, end_line, end_start
        self.sync(pos, line, line_start)

    def after_last(self) -> None:
        """Put lark's counter just after the last token given (before an error is handled)."""
        if self.last is not None:
            t = self.last
            self.sync(t.end_pos, t.end_line, t.end_pos - t.end_column + 1)

    def sync(self, pos: int, line: int, line_start: int) -> None:
        counter = self.state.line_ctr
        counter.char_pos, counter.line, counter.line_start_pos = pos, line, line_start
        counter.column = pos - line_start + 1

    def _lark_error(self, pos: int, line: int, line_start: int):
        self.sync(pos, line, line_start)
        self.state.last_token = self.last
        from cnndsl.syntax.lalr import _Position  # lark asks the parser state for `.position`
        next(self.contextual.lex(self.state, _Position(self.stack)))
        raise AssertionError(f"lark's lexer accepts what ours refused at offset {pos}")  # pragma: no cover
