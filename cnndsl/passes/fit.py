"""Fix hints that name a network input size.

When a window deep in a network doesn't fit, the useful size to change is the network's
input, not that layer's. The nearest input sizes that fit come from the chain of windows on
the path from the input (cnndsl.ir.shape.chain_sizes), and each is confirmed by inferring the
shapes of the layer's ancestors again. All hints of one check share a bounded budget.
"""

from __future__ import annotations

from cnndsl.ir.graph import Graph, Node
from cnndsl.ir.joins import PartialConv, Shortcut, Subsample
from cnndsl.ir.ops import Conv, Pool, check_dims
from cnndsl.ir.shape import Chain, Shape, ShapeProblem, chain_sizes, out_size

BUDGET = 400_000  # window steps searched and nodes re-inferred for hints, per check (~0.3 s)
SEARCH = 50_000  # window steps one search may take


class Refitter:
    """Rewrites a "doesn't fit" hint to offer network input sizes that make the layer fit."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.budget = BUDGET

    def notes(self, shapes: list[Shape | None], node: Node, exc: ShapeProblem) -> tuple[str, ...]:
        """The problem's notes, with the layer's own input sizes replaced by network input
        sizes when the layer is not the first (where the two are the same) and some fit."""
        if exc.refit is None or not node.inputs or node.inputs[0] == self.graph.input.id or self.budget <= 0:
            return exc.notes
        chains = self._chains(shapes, node)
        if chains is None:
            return exc.notes
        given = shapes[self.graph.input.id]
        sizes = {}
        for axis in exc.refit.axes:
            below, above, spent = chain_sizes(given.spatial[axis], chains[axis], min(self.budget, SEARCH))
            sizes[axis], self.budget = (below, above), self.budget - spent
        found = []
        for pick in (1, 0):  # larger first, as the layer hint does
            spatial = list(given.spatial)
            for axis in exc.refit.axes:
                spatial[axis] = sizes[axis][pick]
            candidate = Shape(given.channels, tuple(spatial))
            if None not in spatial and self._confirmed(node, candidate):
                found.append(f"`input {candidate.text()}`")
        return (exc.refit.note(tuple(found)),) if found else exc.notes

    def _chains(self, shapes: list[Shape | None], node: Node) -> list[Chain] | None:
        """Per axis, the (window, ceil) steps from the input through `node`, or None when a
        layer on the path changes sizes otherwise (an up-conv, a crop) or the steps don't
        reproduce the sizes inferred."""
        steps, current = [_step(node, shapes)], node.inputs[0]
        while current != self.graph.input.id:
            self.budget -= 1
            here = self.graph.nodes[current]
            steps.append(_step(here, shapes))
            current = here.inputs[0]
        if any(s is None for s in steps):
            return None
        chains = [tuple(s[axis] for s in reversed(steps) if s) for axis in range(len(shapes[0].spatial))]
        for axis, chain in enumerate(chains):
            size = shapes[0].spatial[axis]
            for w, ceil, _ in chain[:-1]:
                size = out_size(size, w, ceil)
            if size != shapes[node.inputs[0]].spatial[axis]:
                return None
        return chains

    def _confirmed(self, node: Node, candidate: Shape) -> bool:
        """True when every ancestor of `node`, and `node`, infer without a problem from `candidate`."""
        if node.id >= self.budget:
            return False
        self.budget -= 2 * (node.id + 1)  # one pass to find the ancestors, one to infer them
        needed = {node.id}
        for n in reversed(self.graph.nodes[:node.id + 1]):
            if n.id in needed:
                needed.update(n.inputs)
        shapes: dict[int, Shape] = {self.graph.input.id: candidate}
        for n in self.graph.nodes[1:node.id + 1]:
            if n.id in needed:
                try:
                    shapes[n.id] = n.op.infer(tuple(shapes[i] for i in n.inputs))
                    check_dims(shapes[n.id])
                except ShapeProblem:
                    return False
        return True


def _step(node: Node, shapes: list[Shape | None]) -> Chain | None:
    """One node's (window, ceil, unpadded) per axis; () when it keeps the size; None when neither."""
    op, ins = node.op, tuple(shapes[i] for i in node.inputs)
    if isinstance(op, (PartialConv, Subsample, Pool, Shortcut)) or isinstance(op, Conv) and not op.transposed:
        ceil = op.ceil if isinstance(op, Pool) else isinstance(op, Shortcut)  # a shortcut takes ceil(n / stride)
        return tuple((w, ceil, isinstance(op, Pool) and op.unpadded) for w in op.windows(ins))
    out = shapes[node.id] if node.id < len(shapes) else None
    return () if out is not None and ins and out.spatial == ins[0].spatial else None
