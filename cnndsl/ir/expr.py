"""Constants and arithmetic in .arch files, and the builder's located error."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from cnndsl.diagnostics import CnnDslError, Diagnostic, Note
from cnndsl.source import Span
from cnndsl.syntax import ast

MAX_VALUE = 10**15


class BuildError(Exception):
    """A problem at one span; the builder adds the block-use trace and collects it."""

    def __init__(self, span: Span, message: str, *notes: Note):
        super().__init__(message)
        self.span, self.message, self.notes = span, message, notes



MAX_USES_SHOWN = 3  # an error inside a block lists this many of its uses, then counts the rest


class ErrorLog:
    """Diagnostics of one pass. The same error met through several uses of a block is
    reported once, its uses as notes (a mistake in a block used 4 times is 1 error, not 4)."""

    def __init__(self) -> None:
        self.found: dict[tuple, tuple[list[tuple[Span, ...]], list[int]]] = {}
        self.events = 0  # errors met, repeats included: lets a caller see whether a step failed

    def error(self, span: Span, message: str, *notes: Note, trace: tuple[Span, ...] = ()) -> None:
        self.events += 1
        traces, more = self.found.setdefault((span, message, notes), ([], [0]))
        if trace in traces:
            return
        if len(traces) < MAX_USES_SHOWN:
            traces.append(trace)
        else:
            more[0] += 1

    def report(self, exc: BuildError, trace: tuple[Span, ...] = ()) -> None:
        self.error(exc.span, exc.message, *exc.notes, trace=trace)

    def diagnostics(self) -> list[Diagnostic]:
        out = []
        for (span, message, notes), (traces, more) in self.found.items():
            uses = [Note("in the block used here", s) for t in traces for s in reversed(t)]
            if more[0]:
                uses.append(Note(f"and in {more[0]:,} more use{'s' if more[0] != 1 else ''} of the block"))
            out.append(Diagnostic(span, message, notes + tuple(dict.fromkeys(uses))))
        return out

    def raise_if_any(self) -> None:
        if self.found:
            raise CnnDslError(self.diagnostics())


@dataclass
class Env:
    """Constants (`let`) and block parameters in scope."""

    values: dict[str, float]


def evaluate(expr: ast.Value, env: Env) -> float:
    """The value of an expression; errors for undefined names, division by zero, overflow."""
    match expr:
        case ast.Num(value=v):
            result = v
        case ast.Var(name=name, span=span):
            if name not in env.values:
                raise undefined(name, span, env)
            result = env.values[name]
        case ast.Neg(operand=o):
            result = -evaluate(o, env)
        case ast.BinOp(op=op, left=left, right=right, span=span):
            a, b = evaluate(left, env), evaluate(right, env)
            if op == "/" and b == 0:
                raise BuildError(span, "division by zero")
            result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if op == "/" else 0}[op]
            if isinstance(a, int) and isinstance(b, int) and op == "/" and a % b == 0:
                result = a // b
        case ast.SizeLit(span=span):
            raise BuildError(span, "expected a number here, not a size")
        case _:  # pragma: no cover
            raise AssertionError(expr)
    if abs(result) > MAX_VALUE:
        if abs(result) == float("inf"):
            raise BuildError(expr.span, "value is too large to represent (infinite)")
        raise BuildError(expr.span, f"value {_exact(result)} is absurdly large (at most {MAX_VALUE:,})")
    return result


def _exact(value: float) -> str:
    """An integer digit for digit (never through a float), a long one by its length."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if abs(value) < 10**40:
        return f"{value:,}"
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else f"about {int(value.bit_length() * 0.30103):,}"
    return f"with {digits} digits"


def undefined(name: str, span: Span, env: Env) -> BuildError:
    """'x' is not defined, with the closest constant in scope or the list of them."""
    close = difflib.get_close_matches(name, list(env.values), n=1)
    if close:
        return BuildError(span, f"'{name}' is not defined", Note(f"did you mean '{close[0]}'?"))
    if env.values:
        return BuildError(span, f"'{name}' is not defined", Note(f"constants in scope: {', '.join(sorted(env.values))}"))
    return BuildError(span, f"'{name}' is not defined", Note(f"define it with a line such as `let {name} = 64`"))


def integer(expr: ast.Value, env: Env, what: str) -> int:
    """An integer-valued expression (4.0 is fine, 4.5 is not)."""
    value = evaluate(expr, env)
    if value != int(value):
        raise BuildError(expr.span, f"{what} must be a whole number, got {value:g}")
    return int(value)


def positive_int(expr: ast.Value, env: Env, what: str, minimum: int = 1) -> int:
    value = integer(expr, env, what)
    if value < minimum:
        raise BuildError(expr.span, f"{what} must be at least {minimum}, got {value}")
    return value
