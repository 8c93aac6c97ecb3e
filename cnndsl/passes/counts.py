"""Counting: parameters (with and without biases), activations, MACs and other ops.

Conventions (also in the README and `cnndsl check --help`):
- params = weights + biases; `weights` is the slides' column (BN's scale is a weight,
  its shift a bias);
- MACs: conv Cout*Hout*Wout*(Cin/groups)*Kh*Kw, FC in*out; FLOPs = 2*MACs;
- other ops (BN, activations, pools, adds, softmax, LRN) are counted apart, never in MACs;
- activations: output elements of every layer that makes a new tensor, the input
  included; elementwise activations, dropout and flatten work in place and add none.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import ErrorLog
from cnndsl.ir.graph import Graph
from cnndsl.ir.joins import Shortcut
from cnndsl.ir.shape import Shape
from cnndsl.passes.shapes import MAX_ELEMENTS

MAX_PARAMS = 10**12  # in the whole network: 4 TB at fp32, more than any one machine holds


@dataclass(frozen=True, slots=True)
class Counts:
    weights: int
    biases: int
    activations: int  # elements of a new output tensor, 0 when computed in place
    macs: int
    other_ops: int

    @property
    def params(self) -> int:
        return self.weights + self.biases


def count(graph: Graph, shapes: tuple[Shape, ...]) -> tuple[Counts, ...]:
    """Per-node counts, indexed by node id."""
    out = []
    for node in graph.nodes:
        ins = tuple(shapes[i] for i in node.inputs)
        shape = shapes[node.id]
        op = node.op
        inplace = op.inplace or (isinstance(op, Shortcut) and (op.is_identity(ins) or op.mode != "projection"))
        out.append(Counts(op.weights(ins, shape), op.biases(ins, shape), 0 if inplace else shape.numel,
                          op.macs(ins, shape), op.other_ops(ins, shape)))
    return tuple(out)


def total(counts) -> Counts:
    """The sum of a collection of counts."""
    counts = list(counts)
    return Counts(*(sum(getattr(c, f) for c in counts) for f in ("weights", "biases", "activations", "macs", "other_ops")))


def check_sizes(graph: Graph, shapes: tuple[Shape, ...], counts: tuple[Counts, ...]) -> None:
    """Refuse weights no machine could hold: more than MAX_ELEMENTS in one layer, or more than
    MAX_PARAMS in all (reported where the running total crosses it)."""
    errors = ErrorLog()
    running = 0
    for node, c in zip(graph.nodes, counts):
        if c.params > MAX_ELEMENTS or running + c.params > MAX_PARAMS:
            ins = ", ".join(shapes[i].text() for i in node.inputs)
        if c.weights > MAX_ELEMENTS:
            errors.error(node.span, f"this layer has {c.weights:,} weights, more than any machine could hold "
                         f"(at most {MAX_ELEMENTS:,} in one layer)", Note(f"input here: {ins}"),
                         Note("shrink its input (pool or stride first) or its width"), trace=node.trace)
        elif running <= MAX_PARAMS < running + c.params:
            errors.error(node.span, f"the network has {running + c.params:,} parameters up to this layer, more than "
                         f"any machine could hold (at most {MAX_PARAMS:,})", Note(f"input here: {ins}"), trace=node.trace)
        running += c.params
    errors.raise_if_any()
