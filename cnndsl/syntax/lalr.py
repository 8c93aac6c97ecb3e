"""The LALR loop: lark's lexer and tables, driven here so that the AST is built while
reducing (no parse tree), and so that a syntax error does not end the parse.

On an error the rest of its line is skipped, the stacks are popped until the state
takes the end of that line, and parsing resumes on the next line: every line's error
is reported (at most MAX_SYNTAX_ERRORS), not just the first.
"""

from __future__ import annotations

from functools import lru_cache

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import LexerThread
from lark.parsers.lalr_analysis import Shift

from cnndsl.diagnostics import Diagnostic, Note
from cnndsl.source import Source
from cnndsl.syntax.build import AstBuilder, edge, callbacks
from cnndsl.syntax.errors import Brackets, at_end, syntax_diagnostic, tok_span as _tok_span
from cnndsl.syntax.lexer import MAX_TOKENS, Lexer, TooManyTokens

MAX_SYNTAX_ERRORS = 100


@lru_cache(maxsize=4)
def _table(parser: Lark):
    """lark's table with plain values: {state: {token type: (shift?, state or rule number)}};
    the start and end states; for each rule, whether its value is its one child's."""
    table = parser.parser.parser.parser.parse_table
    rules = {rule: i for i, rule in enumerate(parser.rules)}
    states = {s: {t: (a is Shift, arg if a is Shift else rules[arg]) for t, (a, arg) in acts.items()}
              for s, acts in table.states.items()}
    passes_on = [_passes_on(rule) for rule in parser.rules]
    return states, table.start_states["start"], table.end_states["start"], passes_on


def _passes_on(rule) -> bool:
    """A `?rule` with one child that is kept: lark's callback would return that child."""
    (symbol,) = rule.expansion if len(rule.expansion) == 1 else (None,)
    return (symbol is not None and rule.options.expand1 and not rule.alias
            and not (symbol.is_term and symbol.filter_out) and not symbol.name.startswith("_"))


class _Position:
    """What lark's contextual lexer asks of a parser: the state it is in."""

    __slots__ = ("stack",)

    def __init__(self, stack: list):
        self.stack = stack

    @property
    def position(self):
        return self.stack[-1]


class Driver:
    """One parse of one source: feed tokens, reduce with the builder, recover from errors."""

    def __init__(self, parser: Lark, source: Source, builder: AstBuilder):
        self.states, start, self.end, passes_on = _table(parser)
        made = callbacks(parser, builder)
        self.reduces = [(len(r.expansion), r.origin.name, None if skip else made[r])
                        for r, skip in zip(parser.rules, passes_on)]
        self.source, self.brackets = source, Brackets(source)
        self.stack, self.values = [start], []
        self.lexer_state = LexerThread.from_text(parser.parser.lexer, source.text).state
        self.lexer = Lexer(parser.parser.lexer, self.lexer_state, source.text, self.stack)
        self.errors: list[Diagnostic] = []

    def run(self):
        """The start rule's value; None when the parse stopped at an error."""
        while True:
            try:
                return self._feed_all()
            except TooManyTokens as exc:
                self.errors.append(Diagnostic(_tok_span(self.source, exc.token),
                                              f"file too long: more than {MAX_TOKENS:,} tokens (words, numbers, symbols)",
                                              (Note("no network needs this many: repeat layers with `x N`, or define a block"),)))
                return None
            except UnexpectedInput as exc:
                if isinstance(exc, UnexpectedToken) and exc.token is self.lexer.last:
                    self.lexer.after_last()  # the parser refused the token: read on after it
                if not self._recover(exc):
                    return None

    def _feed_all(self):
        last = None
        for last in self.lexer.tokens():
            self._feed(last)
        end = Token.new_borrow_pos("$END", "", last) if last else Token("$END", "", 0, 1, 1)
        return self._feed(end)

    def _feed(self, tok: Token):
        states, stack, values, reduces, kind = self.states, self.stack, self.values, self.reduces, tok.type
        while True:
            acts = states[stack[-1]]
            if kind not in acts:
                raise UnexpectedToken(tok, {t for t in acts if t.isupper()}, state=stack[-1],
                                      token_history=values[-1:] if values and type(values[-1]) is Token else None)
            shift, arg = acts[kind]
            if shift:
                stack.append(arg)
                values.append(tok)
                return None
            size, origin, build = reduces[arg]
            if build is None:  # `?a: b`: b's value is a's; only the state changes
                stack[-1] = states[stack[-2]][origin][1]
                continue
            children = values[-size:] if size else []
            if size:
                del stack[-size:], values[-size:]
            values.append(build(children))
            stack.append(states[stack[-1]][origin][1])
            if kind == "$END" and stack[-1] == self.end:
                return values[-1]

    def _recover(self, exc: UnexpectedInput) -> bool:
        """Report the error; skip to the next line and go on, unless at the end or at the limit."""
        if at_end(exc):
            self._report_end(exc)
            return False
        self.errors.append(syntax_diagnostic(self.source, exc, self.brackets))
        if len(self.errors) >= MAX_SYNTAX_ERRORS:
            last = self.errors.pop()
            self.errors.append(Diagnostic(last.span, last.message, (*last.notes, Note(
                f"stopped after {MAX_SYNTAX_ERRORS} syntax errors; fix these first"))))
            return False
        self._forget_line(exc.line)
        self._end_line(self._skip_line(exc))
        return True

    def _report_end(self, exc: UnexpectedInput) -> None:
        """The end of the file, after earlier errors, is reported only for a bracket that is
        still open and was opened after them (else it is what an earlier error broke)."""
        found = syntax_diagnostic(self.source, exc, self.brackets)
        if not self.errors or found.message.endswith("is never closed") and found.span.line > self.errors[-1].span.line:
            self.errors.append(found)

    def _skip_line(self, exc: UnexpectedInput) -> Token:
        """Move the lexer past the end of the error's line; the newline token it passed."""
        if isinstance(exc, UnexpectedToken) and exc.token.type == "_NL":
            return exc.token
        counter, text = self.lexer_state.line_ctr, self.source.text
        pos = max(counter.char_pos, exc.pos_in_stream + 1 if isinstance(exc, UnexpectedCharacters) else 0)
        at = text.find("\n", pos)
        at = len(text) if at < 0 else at
        counter.feed(text[counter.char_pos:at + 1])
        line, col = self.source.position(at)
        return Token("_NL", "\n", at, line, col, line + 1, 1, at + 1)

    def _forget_line(self, line: int) -> None:
        """Pop what the error's line began (an unclosed '[' too): a later line is then
        read as if the broken one were blank."""
        while len(self.stack) > 1 and _first_line(self.values[-1]) >= line:
            self.stack.pop(), self.values.pop()

    def _end_line(self, newline: Token) -> None:
        """Pop the stacks until feeding `newline` succeeds (the start state takes one)."""
        stack, values = self.stack, self.values
        while True:
            while len(stack) > 1 and "_NL" not in self.states[stack[-1]]:
                stack.pop(), values.pop()
            saved = list(stack), list(values)
            try:
                self._feed(newline)
                return
            except UnexpectedToken:
                stack[:], values[:] = saved
                stack.pop(), values.pop()


def _first_line(value) -> int:
    """The line where a stack value (token, node, or tuple or tree of them) starts; 0 if none."""
    try:
        first = edge(value, 0)
    except (IndexError, AttributeError):
        return 0
    return first.line if type(first) is Token else first.span.line if hasattr(first, "span") else 0
