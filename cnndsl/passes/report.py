"""The `check` report: the slide's table (one row a layer), true totals, and the
JSON form of the same data (schema "cnndsl.check/1", documented in the README)."""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.ir.graph import Graph, is_weighted
from cnndsl.ir.joins import PartialConv, Shortcut
from cnndsl.ir.ops import Activation, BatchNorm, Conv, Linear
from cnndsl.ir.shape import Shape
from cnndsl.passes.counts import Counts, total
from cnndsl.passes.memory import DTYPE_BYTES, MemoryEstimate, estimate
from cnndsl.passes.rf import RF

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
    training: bool = False  # also predict the peak of a training step
    optimizer: str = "sgd-momentum"

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
            "blocks": [_block_json(self, b) for b in blocks(self)],
            "memory": {name: _memory_json(m) for name, m in memory(self).items()},
            "totals": {"params": t.params, "weights": t.weights, "biases": t.biases,
                       "activations": t.activations, "activation_bytes": t.activations * nbytes,
                       "macs": t.macs, "flops": 2 * t.macs, "other_ops": t.other_ops},
        }


def _layer_json(r: Report, node) -> dict:
    c, rf = r.counts[node.id], r.rfs[node.id]
    ins = tuple(r.shapes[i] for i in node.inputs)
    return {
        "name": node.name, "kind": _kind(node.op), "label": node.op.label(ins, r.shapes[node.id]),
        "line": node.span.line, "col": node.span.col, "used_at": [s.line for s in node.trace],
        "scope": list(node.scope), "implicit": node.implicit,
        "inputs": [r.graph.nodes[i].name for i in node.inputs],
        "shape": list(r.shapes[node.id].hwc(r.rank)), "params": c.params, "weights": c.weights, "biases": c.biases,
        "activations": c.activations, "macs": c.macs, "flops": 2 * c.macs, "other_ops": c.other_ops,
        "rf": {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start)},
    }


def memory(r: Report) -> dict[str, MemoryEstimate]:
    """Predicted peak bytes (PyTorch eager) of inference, and of a training step if asked."""
    out = {"inference": estimate(r.graph, r.shapes, r.counts, r.batch, r.dtype)}
    if r.training:
        out["training"] = estimate(r.graph, r.shapes, r.counts, r.batch, r.dtype, training=True, optimizer=r.optimizer)
    return out


def _memory_json(m: MemoryEstimate) -> dict:
    return {"peak_bytes": m.peak, "weights_bytes": m.weights, "activation_bytes": m.activations,
            "gradient_bytes": m.gradients, "optimizer_bytes": m.optimizer_state, "peak_phase": m.phase}


def _block_json(r: Report, b: Block) -> dict:
    c, first, last = b.counts(r), r.graph.nodes[b.nodes[0]], r.graph.nodes[b.nodes[-1]]
    return {"name": b.name, "line": _use_line(first), "repeats": b.repeats,
            "layers": [r.graph.nodes[i].name for i in b.nodes], "shape": list(r.shapes[last.id].hwc(r.rank)),
            "params": c.params, "weights": c.weights, "activations": c.activations, "macs": c.macs,
            "flops": 2 * c.macs, "other_ops": c.other_ops}


def _kind(op) -> str:
    name = type(op).__name__  # BatchNorm -> batch_norm, LRN -> lrn (not l_r_n)
    return "".join("_" + ch.lower() if ch.isupper() and i and name[i - 1].islower() else ch.lower()
                   for i, ch in enumerate(name))


# -- text ----------------------------------------------------------------------------------

def human(n: float) -> str:
    """3.2M, 800K, 25K, 4096: the slides' way of writing sizes."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
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


@dataclass(frozen=True, slots=True)
class Block:
    """A run of consecutive nodes under one top-level label or block use (e.g. `conv2_x`)."""

    name: str
    nodes: tuple[int, ...]
    repeats: int

    def counts(self, r: Report) -> Counts:
        return total(r.counts[i] for i in self.nodes)


def _use_line(node) -> int:
    """The line a block's layer was written on, at the top level: where the block is used."""
    return node.trace[0].line if node.trace else node.span.line


def blocks(r: Report) -> list[Block]:
    """Top-level blocks in source order; nodes outside any block are not listed."""
    runs: list[tuple[str, list[int]]] = []  # (name, node ids): lists, as a tuple grown per node was quadratic
    for node in r.graph.nodes:
        if not node.scope:
            continue
        if runs and runs[-1][0] == node.scope[0] and runs[-1][1][-1] == node.id - 1:
            runs[-1][1].append(node.id)
        else:
            runs.append((node.scope[0], [node.id]))
    out = [Block(name, tuple(ids), 1) for name, ids in runs]
    return [Block(b.name, b.nodes, _repeats(r, b)) for b in out]


def _repeats(r: Report, b: Block) -> int:
    reps = {r.graph.nodes[i].scope[1] for i in b.nodes if len(r.graph.nodes[i].scope) > 1}
    return len(reps) if reps and all(x.isdigit() for x in reps) else 1


def _block_row(r: Report, b: Block) -> list[str]:
    c, last = b.counts(r), r.graph.nodes[b.nodes[-1]]
    weighted = sum(1 for i in b.nodes if is_weighted(r.graph.nodes[i].op)) // b.repeats
    label = f"BLOCK [{weighted} conv]" + (f" x{b.repeats}" if b.repeats > 1 else "")
    params = f"{c.weights:,}" + (f" + {c.biases:,}" if c.biases else "")
    return [str(_use_line(r.graph.nodes[b.nodes[0]])), label, b.name, r.shapes[last.id].text(r.rank),
            f"{c.activations:,}", params, f"{c.macs:,}", _rf_text(r.rfs[last.id])]


def rows(r: Report, expand: bool = True) -> list[tuple[str, ...]]:
    """Table rows; implicit activations fold into the row of the layer they follow.
    Unless `expand`, each top-level block is one row of subtotals."""
    out: list[list[str]] = []
    collapsed = {} if expand else {b.nodes[0]: b for b in blocks(r)}
    skip: set[int] = set()
    for node in r.graph.nodes:
        if node.id in collapsed:
            out.append(_block_row(r, collapsed[node.id]))
            skip.update(collapsed[node.id].nodes)
        if node.id in skip:
            continue
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


def render(r: Report, expand: bool = False) -> str:
    """The whole text report: blocks collapsed to subtotal rows unless `expand`."""
    table = [HEADER, *rows(r, expand)]
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
        *_memory_lines(r),
    ]


def _memory_lines(r: Report) -> list[str]:
    m = memory(r)
    inf = m["inference"]
    lines = [f"peak memory  {_bytes(inf.peak)} predicted for inference at batch {r.batch}, {r.dtype}: weights "
             f"{_bytes(inf.weights)} + activations {_bytes(inf.activations)} (PyTorch eager; no cuDNN workspace)"]
    if "training" in m:
        tr = m["training"]
        lines.append(f"             {_bytes(tr.peak)} predicted for a training step ({r.optimizer}, weight decay) "
                     f"in the steady state (from the second step on, optimizer state held throughout), at its "
                     f"{tr.phase}: weights {_bytes(tr.weights)} + gradients {_bytes(tr.gradients)} + optimizer state "
                     f"{_bytes(tr.optimizer_state)} + activations and temporaries {_bytes(tr.peak - tr.weights - tr.gradients - tr.optimizer_state)}")
    return lines


def _bytes(n: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"
