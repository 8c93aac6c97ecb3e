"""AST nodes: frozen dataclasses mirroring the grammar, each with its span."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cnndsl.source import Source, Span


@dataclass(frozen=True, slots=True)
class Num:
    value: float
    span: Span


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # one of + - * /
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class SizeLit:
    """`3x3`, `224x224x3`: integers joined by x."""

    dims: tuple[int, ...]
    span: Span


Expr = Union[Num, Var, BinOp, Neg]
Value = Union[Num, Var, BinOp, Neg, SizeLit]


@dataclass(frozen=True, slots=True)
class KwOption:
    """`stride 2`, `pad same`, `ceil`, or a bare name such as a block parameter."""

    key: str
    value: Value | None
    span: Span


@dataclass(frozen=True, slots=True)
class PosOption:
    """A bare value such as `64` or `16*k` (a conv's width)."""

    value: Expr
    span: Span


Option = Union[KwOption, PosOption]


@dataclass(frozen=True, slots=True)
class Head:
    """A single layer: `3x3 conv` / `max pool` / `FC 4096` / `1x1` (ResNet table)."""

    size: SizeLit | None
    words: tuple[str, ...]
    arg: Value | None
    span: Span


@dataclass(frozen=True, slots=True)
class Group:
    """`[a; b; c]`: a sequence, possibly multi-line."""

    lines: tuple["Line", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """`inception(64, 96, 128, 16, 32, 32)`: a use of a named block."""

    name: str
    args: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Parallel:
    """`concat { ... }` / `add { ... }`: one branch a line, joined."""

    join: str
    branches: tuple["Line", ...]
    span: Span


Unit = Union[Head, Group, Call, Parallel]


@dataclass(frozen=True, slots=True)
class Line:
    """A layer line: label, unit, repeat count, options."""

    label: str | None
    unit: Unit
    repeat: Expr | None
    options: tuple[Option, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Let:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class RuleStep:
    """One layer of a rule's chain, e.g. `batch norm, eps 0.001`."""

    words: tuple[str, ...]
    options: tuple[Option, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Rule:
    """`conv = conv -> batch norm -> relu`: how every layer of one kind expands."""

    name: str
    chain: tuple[RuleStep, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class BlockDef:
    name: str
    params: tuple[str, ...]
    body: tuple["Statement", ...]
    span: Span


Statement = Union[Let, Rule, BlockDef, Line]


@dataclass(frozen=True, slots=True)
class Module:
    """A whole .arch file."""

    source: Source
    statements: tuple[Statement, ...]
