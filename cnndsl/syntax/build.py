"""The AST, built while the LALR parser reduces: one method per grammar rule, given the
rule's children (punctuation filtered out) and its span in `self.span`. No parse tree
is made and nothing recurses, however long a line or deep an expression.

Literals that the rest of the compiler could not handle (a number of thousands of
digits, an expression hundreds of operators deep) are refused here, with their span.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.parse_tree_builder import ParseTreeBuilder

from cnndsl.diagnostics import Diagnostic, Note
from cnndsl.source import Source, Span
from cnndsl.syntax import ast

MAX_NUMBER_DIGITS = 1000
MAX_EXPR_DEPTH = 100
_DIGITS = re.compile(r"\d+")

# The rules whose node needs a span: computed from the first and last of the rule's tokens.
_LOCATED = frozenset({"let", "rule", "rule_step", "block_def", "line", "head", "head_1d", "group", "call",
                      "parallel", "kw_option", "pos_option", "num", "var", "neg", "add", "sub", "mul", "div"})


def callbacks(parser: Lark, builder: "AstBuilder") -> dict:
    """The parser's reduce callbacks, calling `builder`'s methods (lark's own child
    filtering and placeholders kept; positions computed here, not by lark)."""
    made = _tree_builder(parser).create_callback(builder)
    for rule in made:
        if (rule.alias or rule.origin.name) in _LOCATED:
            made[rule] = _located(made[rule], builder)
    return made


@lru_cache(maxsize=4)
def _tree_builder(parser: Lark) -> ParseTreeBuilder:
    return ParseTreeBuilder(parser.rules, Tree, False, False, True)


def _located(build, builder: "AstBuilder"):
    source = builder.src

    def reduce(children):
        first, last = edge(children, 0), edge(children, -1)
        start = (first.line, first.column) if type(first) is Token else (first.span.line, first.span.col)
        end = (last.end_line, last.end_column) if type(last) is Token else (last.span.end_line, last.span.end_col)
        builder.span = Span(source, *start, *end)
        return build(children)
    return reduce


def edge(x, i: int):
    """The first (i=0) or last (i=-1) token or node of a rule's children, looking into
    the tuples and inlined trees that carry no span of their own."""
    while True:
        x = x[i] if type(x) in (list, tuple) else x.children[i] if type(x) is Tree else x
        if type(x) not in (list, tuple, Tree):
            return x


class AstBuilder:
    """Each method builds one AST node from one grammar rule; problems are collected."""

    def __init__(self, source: Source):
        self.src = source
        self.span: Span | None = None
        self.problems: list[Diagnostic] = []
        self._depth: dict[int, tuple[object, int]] = {}  # id -> (node, operators nested in it)

    def start(self, stmts):
        return tuple(stmts)

    body = start

    def let(self, c):
        return ast.Let(str(c[0]), c[1], self.span)

    def rule(self, c):
        return ast.Rule(str(c[0]), tuple(c[1:]), self.span)

    def rule_step(self, c):
        return ast.RuleStep(tuple(map(str, c[0])), tuple(c[1:]), self.span)

    def block_def(self, c):
        return ast.BlockDef(str(c[0]), c[1] or (), c[2], self.span)

    def params(self, names):
        return tuple(map(str, names))

    def line(self, c):
        label, unit, repeat, *options = c
        return ast.Line(label and str(label), unit, repeat, tuple(options), self.span)

    def label(self, c):
        return c[0]  # the token: its position starts the line's span

    def repeat(self, c):
        return c[0]

    def head(self, c):
        if len(c) == 1:  # the bare-size alternative: `1x1`
            return ast.Head(self._size(c[0]), ("conv",), None, self.span)
        size, words, arg = c
        return ast.Head(size and self._size(size), tuple(map(str, words)), arg, self.span)

    def head_1d(self, c):
        size, words, arg = c
        span = _tok_span(self.src, size)
        if self._short(size) and not str(size).isdigit():
            self.problems.append(Diagnostic(span, f"a kernel size must be a whole number, not {size}"))
        return ast.Head(ast.SizeLit((self._int(size),), span), tuple(map(str, words)), arg, self.span)

    def words(self, c):
        return tuple(c)  # the tokens: their positions bound the head's span

    def group(self, lines):
        return ast.Group(tuple(lines), self.span)

    def call(self, c):
        return ast.Call(str(c[0]), c[1] or (), self.span)

    def args(self, exprs):
        return tuple(exprs)

    def parallel(self, c):
        return ast.Parallel(str(c[0]), c[1], self.span)

    def branches(self, lines):
        return tuple(lines)

    def kw_option(self, c):
        value = c[1]
        if type(value) is Token:
            value = ast.Var(str(value), _tok_span(self.src, value))
        return ast.KwOption(str(c[0]), value, self.span)

    def pos_option(self, c):
        return ast.PosOption(c[0], self.span)

    def size_arg(self, c):
        return self._size(c[0])

    def num(self, c):
        text = str(c[0])
        if not self._short(c[0]):
            return ast.Num(0, self.span)
        return ast.Num(float(text) if any(ch in text for ch in ".eE") else int(text), self.span)

    def var(self, c):
        return ast.Var(str(c[0]), self.span)

    def neg(self, c):
        return self._nested(ast.Neg(c[0], self.span), c[0])

    def _binop(op):  # noqa: N805 - a method factory evaluated in the class body
        def build(self, c):
            return self._nested(ast.BinOp(op, c[0], c[1], self.span), c[0], c[1])
        return build

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")

    def _nested(self, node, *operands):
        """Refuse, once per expression, operators nested deeper than MAX_EXPR_DEPTH."""
        depth = 1 + max(self._depth.get(id(o), (None, 0))[1] for o in operands)
        self._depth[id(node)] = (node, depth)
        if depth == MAX_EXPR_DEPTH + 1:
            self.problems.append(Diagnostic(node.span, f"expression nested more than {MAX_EXPR_DEPTH} operators deep",
                                            (Note("compute it in steps with `let`, or write the number"),)))
        return node

    def _size(self, tok: Token) -> ast.SizeLit:
        dims = tuple(self._int(d) for d in str(tok).split("x")) if self._short(tok) else (1,)
        return ast.SizeLit(dims, _tok_span(self.src, tok))

    def _int(self, digits: str) -> int:
        return int(digits) if len(digits) <= MAX_NUMBER_DIGITS and digits.isdigit() else 1

    def _short(self, tok: Token) -> bool:
        """False (and a diagnostic) for a literal too long to be a number of a network."""
        digits = max(map(len, _DIGITS.findall(tok))) if len(tok) > MAX_NUMBER_DIGITS else 0
        if digits <= MAX_NUMBER_DIGITS:
            return True
        self.problems.append(Diagnostic(_tok_span(self.src, tok),
                                        f"number too long: {digits:,} digits (at most {MAX_NUMBER_DIGITS:,})",
                                        (Note("no layer needs a number this large"),)))
        return False


def _tok_span(source: Source, tok: Token) -> Span:
    return Span(source, tok.line, tok.column, tok.end_line, tok.end_column)
