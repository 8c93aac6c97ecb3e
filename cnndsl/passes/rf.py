"""Receptive fields: size, jump (effective stride) and start (centre of the first unit's
field, in input pixels) per spatial axis, through branches (Araujo et al., Distill 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.diagnostics import Collector, Note
from cnndsl.ir.graph import Graph
from cnndsl.ir.ops import Conv
from cnndsl.ir.shape import Shape


MAX_JUMP = 2**53  # beyond this an RF start is no longer exact as a float


@dataclass(frozen=True, slots=True)
class RF:
    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[float, ...]


def receptive_fields(graph: Graph, shapes: tuple[Shape, ...]) -> tuple[RF, ...]:
    """RF of each node's output units. At a join the largest field wins; branches whose
    jumps differ are an error (their units would not line up)."""
    errors = Collector()
    rank = len(shapes[0].spatial)
    rfs: list[RF] = []
    for node in graph.nodes:
        if not node.inputs:
            rfs.append(RF((1,) * rank, (1,) * rank, (0.0,) * rank))
            continue
        ins = [rfs[i] for i in node.inputs[:node.op.data_inputs]]
        jumps = {r.jump for r in ins}
        if len(jumps) > 1:
            each = ", ".join(f"branch {i} {'x'.join(map(str, r.jump))}" for i, r in enumerate(ins, 1))
            errors.error(node.span, f"branches joined here have different strides (receptive-field jumps: {each})",
                         Note("their output units would not line up; check the strides of each branch"))
        rf = max(ins, key=lambda r: r.size)
        if isinstance(node.op, Conv) and node.op.transposed:
            rfs.append(_upsampled(rf, node.op))
            continue
        windows = node.op.windows(tuple(shapes[i] for i in node.inputs))
        jump = max((j * w.stride for w, j in zip(windows or (), rf.jump)), default=1)
        if jump > MAX_JUMP:  # the start would overflow a float
            errors.error(node.span, f"the strides up to here multiply to {jump:,}, far beyond any input size",
                         Note("a stride larger than its input leaves one output position; check the strides"))
        elif windows and len(windows) == len(rf.size):
            rf = RF(tuple(s + (w.extent - 1) * j for s, w, j in zip(rf.size, windows, rf.jump)),
                    tuple(j * w.stride for w, j in zip(windows, rf.jump)),
                    tuple(st + ((w.extent - 1) / 2 - w.pad) * j for st, w, j in zip(rf.start, windows, rf.jump)))
        rfs.append(rf)
    errors.raise_if_any()
    return tuple(rfs)


def _upsampled(rf: RF, op: Conv) -> RF:
    """Through a transposed conv: each output reads ceil(k/s) inputs per axis and the
    jump shrinks by the stride (2x2 up-conv with stride 2: same field, half the jump)."""
    size, jump, start = [], [], []
    for n, j, st, k, s, p in zip(rf.size, rf.jump, rf.start, op.kernel, op.stride, op.pad):
        size.append(n + (-(-k // s) - 1) * j)
        jump.append(_num(j / s))
        start.append(st + (p - (k - 1) / 2) * j / s)
    return RF(tuple(size), tuple(jump), tuple(start))


def _num(x: float) -> int | float:
    return int(x) if x == int(x) else x
