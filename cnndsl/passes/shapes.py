"""Shape inference: every node's output shape, every problem reported at once."""

from __future__ import annotations

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import ErrorLog
from cnndsl.ir.graph import Graph
from cnndsl.ir.ops import check_dims
from cnndsl.ir.shape import Shape, ShapeProblem
from cnndsl.passes.fit import Refitter


MAX_ELEMENTS = 10**12  # in one tensor: 4 TB at fp32, more than any one machine holds


def infer_shapes(graph: Graph) -> tuple[Shape, ...]:
    """Output shape of each node, indexed by node id; raises CnnDslError listing every
    problem. A node whose input failed is skipped, so one mistake gives one error."""
    errors = ErrorLog()
    flag = graph.input_flag
    shapes: list[Shape | None] = []
    refitter = Refitter(graph)  # "doesn't fit" hints name network input sizes that fit
    for node in graph.nodes:
        ins = tuple(shapes[i] for i in node.inputs)
        if any(s is None for s in ins):
            shapes.append(None)
            continue
        try:
            out = node.op.infer(ins)
            check_dims(out)
            _check_elements(out)
        except ShapeProblem as exc:
            notes = [Note(n) for n in refitter.notes(shapes, node, exc)]
            if ins:
                notes.insert(0, Note(f"input{'s' if len(ins) > 1 else ''} here: {', '.join(s.text() for s in ins)}"))
            if flag is not None and node.inputs:  # sized by --input
                notes.append(Note(f"the network's input size {shapes[0].text()} comes from here", flag))
            errors.error(node.span if node.inputs or flag is None else flag, exc.message, *notes, trace=node.trace)
            out = None
        shapes.append(out)
    errors.raise_if_any()
    return tuple(shapes)


def _check_elements(shape: Shape) -> None:
    if shape.numel > MAX_ELEMENTS:
        raise ShapeProblem(f"a tensor of {shape.text()} has {shape.numel:,} elements, more than any machine could hold "
                           f"(at most {MAX_ELEMENTS:,} in one tensor)", "use a smaller input or fewer channels")
