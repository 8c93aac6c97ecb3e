"""The `check` report: the slide's table (one row a layer), true totals, and the
JSON form of the same data (schema "cnndsl.check/1", documented in the README)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnndsl.ir.graph import Graph
from cnndsl.ir.joins import PartialConv, Shortcut
from cnndsl.ir.ops import Activation, BatchNorm, Conv, Linear
from cnndsl.ir.shape import Shape
from cnndsl.passes.counts import Counts, total
from cnndsl.passes.rf import RF

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
SCHEMA = "cnndsl.check/1"


@dataclass(frozen=True, slots=True)
class Report:
    """Everything `check` knows about a network at one input size, batch and dtype."""

    graph: Graph
    shapes: tuple[Shape, ...]
    counts: tuple[Counts, ...]
    rfs: tuple[RF, ...]
    source_name: str
    batch: int = 1
    dtype: str = "fp32"

    @property
    def rank(self) -> int:
        return len(self.shapes[0].spatial)

    @property
    def totals(self) -> Counts:
        return total(self.counts)

    def to_json(self) -> dict:
        """The stable JSON form; see README "JSON schema"."""
        nbytes = DTYPE_BYTES[self.dtype] * self.batch
        layers = [_layer_json(self, n) for n in self.graph.nodes]
        t = self.totals
        return {
            "schema": SCHEMA, "network": self.graph.name, "source": self.source_name,
            "input": list(self.shapes[0].hwc(self.rank)), "batch": self.batch, "dtype": self.dtype,
            "layers": layers,
            "totals": {"params": t.params, "weights": t.weights, "biases": t.biases,
                       "activations": t.activations, "activation_bytes": t.activations * nbytes,
                       "macs": t.macs, "flops": 2 * t.macs, "other_ops": t.other_ops},
        }


def _layer_json(r: Report, node) -> dict:
    c, rf = r.counts[node.id], r.rfs[node.id]
    ins = tuple(r.shapes[i] for i in node.inputs)
    return {
        "name": node.name, "kind": _kind(node.op), "label": node.op.label(ins, r.shapes[node.id]),
        "line": node.span.line, "col": node.span.col, "scope": list(node.scope), "implicit": node.implicit,
        "inputs": [r.graph.nodes[i].name for i in node.inputs],
        "shape": list(r.shapes[node.id].hwc(r.rank)), "params": c.params, "weights": c.weights, "biases": c.biases,
        "activations": c.activations, "macs": c.macs, "flops": 2 * c.macs, "other_ops": c.other_ops,
        "rf": {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start)},
    }


def _kind(op) -> str:
    name = type(op).__name__
    return "".join("_" + ch.lower() if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


# -- text ----------------------------------------------------------------------------------

def human(n: float) -> str:
    """3.2M, 800K, 25K, 4096: the slides' way of writing sizes."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale * 10 or (unit != "K" and n >= scale):
            value = n / scale
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:g}"


def _memory(shape: Shape, c: Counts, rank: int) -> str:
    if c.activations == 0:
        return "(in place)"
    return f"{'*'.join(map(str, shape.hwc(rank)))} = {c.activations:,}"


def _params(node, ins: tuple[Shape, ...], c: Counts) -> str:
    op = node.op
    if isinstance(op, Conv) and not op.transposed:
        k = "*".join(map(str, op.kernel))
        cin = ins[0].channels if op.groups == 1 else f"{ins[0].channels}/{op.groups}"
        text = f"({k}*{cin})*{op.out_channels} = {c.weights:,}"
    elif isinstance(op, Linear):
        text = f"{'*'.join(map(str, ins[0].hwc()[:-1] + (ins[0].channels,)))}*{op.out_features} = {c.weights:,}" \
            if ins[0].spatial else f"{ins[0].channels}*{op.out_features} = {c.weights:,}"
    elif isinstance(op, BatchNorm):
        text = f"2*{ins[0].channels}"
        return f"{text} = {c.params:,}"
    elif isinstance(op, PartialConv):
        text = f"{sum(map(len, op.table))}*{'*'.join(map(str, op.kernel))} = {c.weights:,}"
    elif c.weights:
        text = f"{c.weights:,}"
    else:
        return "0"
    return text + (f" + {c.biases:,}" if c.biases else "")


def _rf_text(rf: RF) -> str:
    size = rf.size[0] if len(set(rf.size)) == 1 else "x".join(map(str, rf.size))
    jump = rf.jump[0] if len(set(rf.jump)) == 1 else "x".join(map(str, rf.jump))
    return f"{size} /{jump:g}" if isinstance(jump, (int, float)) else f"{size} /{jump}"


def rows(r: Report, expand: bool = True) -> list[tuple[str, ...]]:
    """Table rows; implicit activations fold into the row of the layer they follow."""
    out: list[list[str]] = []
    for node in r.graph.nodes:
        ins = tuple(r.shapes[i] for i in node.inputs)
        shape, c = r.shapes[node.id], r.counts[node.id]
        label = node.op.label(ins, shape)
        if node.implicit and isinstance(node.op, Activation) and out and not c.activations:
            out[-1][1] += f" +{label.lower()}"
            continue
        if isinstance(node.op, Shortcut) and node.op.is_identity(ins):
            continue
        out.append([str(node.span.line), label, node.name, shape.text(r.rank), _memory(shape, c, r.rank),
                    _params(node, ins, c), f"{c.macs:,}" if c.macs else "0", _rf_text(r.rfs[node.id])])
    return [tuple(row) for row in out]


HEADER = ("line", "layer", "name", "output", "memory (elements)", "params (weights + biases)", "MACs", "RF /jump")


def render(r: Report) -> str:
    """The whole text report."""
    table = [HEADER, *rows(r)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    right = {0, 6}
    lines = []
    for row in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    head = f"{r.graph.name} ({r.source_name}): input {r.shapes[0].text(r.rank)}, batch {r.batch}, {r.dtype}"
    return "\n".join([head, "", *lines, "", *_totals(r)]) + "\n"


def _totals(r: Report) -> list[str]:
    t = r.totals
    nbytes = DTYPE_BYTES[r.dtype]
    per_image = t.activations * nbytes
    return [
        f"params       {t.params:,} ({human(t.params)}): weights {t.weights:,} + biases {t.biases:,}",
        f"activations  {t.activations:,} elements ({human(t.activations)}) = {_bytes(per_image)} an image at {r.dtype}"
        + (f", {_bytes(per_image * r.batch)} for batch {r.batch}" if r.batch != 1 else "") + " (forward, sum of all layer outputs)",
        f"weights mem  {_bytes(t.params * nbytes)} at {r.dtype}",
        f"MACs         {t.macs:,} ({human(t.macs)}) an image; FLOPs = 2 x MACs = {2 * t.macs:,} ({human(2 * t.macs)})",
        f"other ops    {t.other_ops:,} ({human(t.other_ops)}): BN, activations, pools, adds, softmax, LRN (not in MACs)",
    ]


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def spatial_product(shape: Shape) -> int:
    return math.prod(shape.spatial)
