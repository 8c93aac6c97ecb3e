"""Size limits of the builder: how many IR nodes a network may expand to and how deeply its
groups and block uses may nest, checked before a repeat is built (so that `x 10^9` is
refused at once, not after building a billion layers)."""

from __future__ import annotations

from cnndsl.ir import layers
from cnndsl.ir.directives import directive
from cnndsl.ir.expr import BuildError
from cnndsl.source import Span
from cnndsl.syntax import ast

MAX_DEPTH = 64  # groups, branches and block uses nested in one another (brackets alone stop at 32)
MAX_NODES = 20_000  # IR nodes after expansion (implicit ReLU/BN included); ResNet-1001 has about 4,000


class TooBig(Exception):
    """The network is too large: stop building at once (every further copy would fail too)."""

    def __init__(self, span: Span, message: str, trace: tuple[Span, ...] = ()):
        self.span, self.message, self.trace = span, message, trace


def too_many(span: Span, trace: tuple[Span, ...] = ()) -> TooBig:
    return TooBig(span, f"the network has more than {MAX_NODES:,} layers (the limit, counting implicit activations "
                        "and rule layers); this line would add more", trace)


def check_repeat(line: ast.Line, count: int, copies: int, depth: int, trace: tuple[Span, ...], made: int,
                 blocks: dict[str, ast.BlockDef]) -> None:
    """Refuse a repeat that would make more than MAX_NODES layers before building any of it:
    `copies` is how many times the enclosing repeats build it, `made` the nodes so far."""
    each = _min_layers(line.unit, blocks, {}, depth)
    total = copies * count * each
    if total <= MAX_NODES and made + count * each <= MAX_NODES:
        return
    if total <= MAX_NODES:  # not this repeat alone: with what is built already it passes the limit
        raise too_many(line.span, trace)
    if each <= 1 and copies == 1:
        raise BuildError(line.repeat.span, f"repeat count {count:,} is too large: a network may have at most {MAX_NODES:,} layers")
    detail = f"{count:,} copies" + (f" of at least {each:,} layers" if each > 1 else "") + \
        (f", built {copies:,} times by the enclosing repeats" if copies > 1 else "")
    raise TooBig(line.repeat.span, f"repeat count {count:,} is too large: it makes at least {total:,} layers "
                                  f"({detail}); a network may have at most {MAX_NODES:,}", trace)


def deeper(line: ast.Line, depth: int, trace: tuple[Span, ...]) -> int:
    """The nesting depth inside `line`'s group, branches or block use; refused past MAX_DEPTH
    (a chain of 3,000 blocks each using the next would exhaust Python's stack)."""
    if depth >= MAX_DEPTH:
        raise TooBig(line.span, f"groups, branches and block uses are nested more than {MAX_DEPTH} deep here", trace)
    return depth + 1


def _min_layers(unit: ast.Unit, blocks: dict[str, ast.BlockDef], known: dict[str, int], depth: int) -> int:
    """A lower bound on the layers one copy of `unit` makes, counting only literal repeats
    (and nothing below MAX_DEPTH levels, where building stops anyway)."""
    if isinstance(unit, ast.Head):
        return 1
    if depth >= MAX_DEPTH:
        return 0
    if isinstance(unit, ast.Call):
        if unit.name not in known and unit.name in blocks:
            known[unit.name] = 0  # a recursive use counts nothing (it is an error anyway)
            body = [s for s in blocks[unit.name].body if isinstance(s, ast.Line)]
            known[unit.name] = _min_lines(body, blocks, known, depth + 1)
        return known.get(unit.name, 1)
    return _min_lines(unit.lines if isinstance(unit, ast.Group) else unit.branches, blocks, known, depth + 1)


def _min_lines(lines, blocks: dict[str, ast.BlockDef], known: dict[str, int], depth: int) -> int:
    total = 0
    for line in lines:
        if directive(line) or layers.is_identity(line):
            continue
        n = line.repeat.value if isinstance(line.repeat, ast.Num) and isinstance(line.repeat.value, int) else 1
        total += max(1, n) * _min_layers(line.unit, blocks, known, depth)
    return total
