"""The ONNX backend: an `onnx.ModelProto` emitted straight from the IR.

No torch on this path, nor the `onnx` package's Python layer: onnx's protobuf messages
and numpy only (cnndsl.backends.onnx_proto says why). The graph uses one opset, 17 by default
(any opset from 17 to the installed onnx's newest may be asked for); its input has a
symbolic batch dimension `N`; every intermediate value carries its shape in
value_info; nodes and values are named after the IR nodes (`conv2_x.0.conv1`), with
`/part` suffixes where one layer takes several ONNX nodes (`fc1/flatten`); each node's
doc_string points back to its line (`vgg16.arch:12`). Initializers are named after the
state-dict keys they hold (`conv1.weight`). How each layer kind is lowered:
cnndsl.backends.onnx_lower.

Output is deterministic: the same network and options give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnndsl.backends import onnx_lower, onnx_proto
from cnndsl.backends.onnx_proto import ModelProto, NodeProto, TensorProto, ValueInfoProto
from cnndsl.backends.blocks import BLOCK, Given, Lazy, stream
from cnndsl.backends.weights_io import resolve_weights
from cnndsl.diagnostics import CnnDslError, Diagnostic, Note
from cnndsl.ir.graph import Graph, Node
from cnndsl.ir.ops import BatchNorm, Conv

DEFAULT_OPSET = 17
MIN_OPSET = 17
PRODUCER = "cnndsl"


@dataclass(frozen=True, slots=True)
class Options:
    fp16: bool = False
    fold_bn: bool = False
    opset: int = DEFAULT_OPSET


def check_opset(opset: int) -> int:
    """`opset` if cnndsl can emit it (17 up to the installed onnx's newest), else ValueError."""
    if opset == DEFAULT_OPSET:
        return opset
    import onnx.defs  # the whole onnx package (slow to import): only for a non-default opset
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset {opset} is not supported: cnndsl emits opsets {MIN_OPSET} to {newest}")
    return opset


def to_onnx(network, seed: int = 0, weights=None, fp16: bool = False, fold_bn: bool = False,
            opset: int = DEFAULT_OPSET) -> ModelProto:
    """The network as an ONNX model holding its weights.

    weights: as cnndsl.backends.weights_io.resolve_weights takes them (None: the shared
    initialiser under `seed`, identical to the PyTorch backend's). fp16: weights and I/O
    in float16. fold_bn: batch norm after a conv folded into the conv's weights.
    Raises WeightsError for bad weights.
    """
    model, tensors = emit(network, seed, weights, Options(fp16, fold_bn, check_opset(opset)))
    model.graph.initializer.extend(onnx_proto.tensor(np.asarray(array), name) for name, array in tensors)
    return model


def emit(network, seed: int = 0, weights=None, options: Options = Options()) \
        -> tuple[ModelProto, list[tuple[str, np.ndarray | Lazy]]]:
    """The model without its initializers, and the initializers as (name, array) in graph order
    (drawn weights still Lazy: not drawn yet)."""
    _fits_protobuf(network, sum(c.params for c in network.report.counts) * (2 if options.fp16 else 4))
    params = resolve_weights(network, weights, seed, options.fp16)
    builder = Builder(network, params, options)
    for node in network.graph.nodes[1:]:
        onnx_lower.lower(builder, node)
    return builder.model(), builder.initializers


def serialize(network, seed: int = 0, weights=None, fp16: bool = False, fold_bn: bool = False,
              opset: int = DEFAULT_OPSET) -> Iterator[bytes | memoryview]:
    """The bytes of `to_onnx(...).SerializeToString()`, as chunks to write one after the other,
    each before taking the next (cnndsl.backends.blocks.stream reuses a chunk's buffer): given
    weights are not copied (the chunks point into the arrays), drawn weights are drawn a block at
    a time, a few blocks ahead in threads, while the caller writes the ones before, so no copy of
    the weights (VGG16's are 0.5 GB) is ever held whole. Relies on protobuf's canonical
    encoding: fields in number order, so a message is the concatenation of its parts."""
    model, tensors = emit(network, seed, weights, Options(fp16, fold_bn, check_opset(opset)))
    head, tail = _split(model.graph, GRAPH_INITIALIZER)
    parts = [head, *(chunk for name, array in tensors for chunk in _tensor_field(name, array)), tail]
    model.ClearField("graph")
    before, after = _split(model, MODEL_GRAPH)
    size = sum(p.nbytes if isinstance(p, Lazy) else len(p) for p in parts)
    _fits_protobuf(network, size + len(before) + len(after))
    return stream([before, _key(MODEL_GRAPH) + _varint(size), *parts, after])


PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf cannot parse a larger message, so no reader can load the file


def _fits_protobuf(network, size: int) -> None:
    """Refuse, before writing anything, a model that no ONNX reader could load (weights in one
    file; ONNX's external-data format is not written), located at the layer with most weights.
    `emit` checks the weights' bytes before making any tensor; `serialize` the exact size."""
    if size <= PROTOBUF_LIMIT:
        return
    params = [c.params for c in network.report.counts]
    node = network.graph.nodes[max(range(len(params)), key=params.__getitem__)]
    raise CnnDslError([Diagnostic(node.span, f"the ONNX file would take at least {size:,} bytes, more than the "
                                             f"{PROTOBUF_LIMIT:,} that protobuf (so any ONNX reader) can load",
                                  (Note(f"this layer, the largest, has {params[node.id]:,} parameters"),
                                   Note("fix: compile to PyTorch (`-o net.py`), use `--fp16`, or make it smaller")))])


def to_bytes(network, **options) -> bytes:
    """`serialize`'s chunks as one bytes object (for onnxruntime's InferenceSession)."""
    out = io.BytesIO()
    for chunk in serialize(network, **options):
        out.write(chunk)
    return out.getvalue()


MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA = 7, 5, 9  # field numbers in onnx.proto


def _split(message, field: int) -> tuple[bytes, bytes]:
    """The encoding of `message`'s fields numbered below `field`, and of those above it."""
    before, after = type(message)(), type(message)()
    before.CopyFrom(message)
    after.CopyFrom(message)
    for descriptor, _ in message.ListFields():
        (after if descriptor.number < field else before).ClearField(descriptor.name)
    return before.SerializeToString(), after.SerializeToString()


def _tensor_field(name: str, array: np.ndarray | Lazy) -> list[bytes | memoryview | Lazy]:
    """GraphProto.initializer (field 5) holding one TensorProto, its raw_data (field 9) uncopied
    (or, Lazy, not computed yet)."""
    if not isinstance(array, Lazy):
        array = np.ascontiguousarray(array)
    header = TensorProto(dims=array.shape, data_type=onnx_proto.element_type(array.dtype), name=name)
    raw = array if isinstance(array, Lazy) else memoryview(array.reshape(-1)).cast("B")
    tensor = header.SerializeToString() + _key(TENSOR_RAW_DATA) + _varint(raw.nbytes)
    return [_key(GRAPH_INITIALIZER) + _varint(len(tensor) + raw.nbytes) + tensor, raw]


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Builder:
    """Collects ONNX nodes, initializers and value infos while the IR is lowered."""

    def __init__(self, network, params: dict[str, np.ndarray | Lazy], options: Options):
        self.network = network
        self.graph = network.graph
        self.params = params
        self.options = options
        self.dtype = np.float16 if options.fp16 else np.float32
        self.elem = TensorProto.FLOAT16 if options.fp16 else TensorProto.FLOAT
        self.nodes: list[NodeProto] = []
        self.initializers: list[tuple[str, np.ndarray | Lazy]] = []
        self.infos: list[ValueInfoProto] = []
        self.values: dict[int, str] = {0: self.graph.input.name}
        self.folds = fold_pairs(self.graph) if options.fold_bn else {}

    def x(self, node_id: int) -> str:
        """The ONNX value holding IR node `node_id`'s output."""
        return self.values[node_id]

    def shape(self, node_id: int):
        return self.network.shapes[node_id]

    def add(self, node: Node, op_type: str, inputs: list[str], dims: tuple[int, ...], part: str | None = None,
            **attrs) -> str:
        """One ONNX node. `part` None: the IR node's own output, named after it; else a helper
        value `name/part`. `dims` is the output shape without the batch."""
        out = node.name if part is None else f"{node.name}/{part}"
        self.nodes.append(onnx_proto.node(op_type, inputs, [out], name=out, doc_string=_where(node), **attrs))
        self.infos.append(onnx_proto.value_info(out, self.elem, ["N", *dims]))
        if part is None:
            self.values[node.id] = out
        return out

    def alias(self, node: Node, value: str) -> None:
        """The IR node computes nothing at inference (dropout, identity shortcut)."""
        self.values[node.id] = value

    def param(self, key: str) -> str:
        """A state-dict tensor as an initializer of the model's float type."""
        return self.tensor(key, self.params[key])

    def vector(self, key: str) -> np.ndarray:
        """A per-channel tensor (bias, batch norm's), whole, for a lowering's arithmetic."""
        return np.asarray(self.params[key])

    def tensor(self, name: str, array: np.ndarray | Lazy) -> str:
        """An initializer of the model's float type: a large array to convert is converted block by
        block as it is written (cnndsl.backends.blocks.Given), a small one at once."""
        if isinstance(array, np.ndarray) and array.dtype != self.dtype and array.size > BLOCK:
            array = Given(np.ascontiguousarray(array))
        array = array.astype(self.dtype) if isinstance(array, Lazy) else np.asarray(array, dtype=self.dtype)
        self.initializers.append((name, array))
        return name

    def ints(self, name: str, values) -> str:
        self.initializers.append((name, np.asarray(values, dtype=np.int64)))
        return name

    def model(self) -> ModelProto:
        from cnndsl import __version__
        out_id = self.graph.output
        output = self.x(out_id)
        if output == self.x(0):  # nothing computed: ONNX wants an output a node makes
            output = self.add(self.graph.nodes[out_id], "Identity", [output], _dims(self.shape(out_id)))
        graph = onnx_proto.GraphProto(
            node=self.nodes, name=self.graph.name,
            input=[onnx_proto.value_info(self.x(0), self.elem, ["N", *_dims(self.shape(0))])],
            output=[onnx_proto.value_info(output, self.elem, ["N", *_dims(self.shape(out_id))])],
            value_info=[v for v in self.infos if v.name != output])
        return onnx_proto.model(graph, self.options.opset, producer_name=PRODUCER, producer_version=__version__,
                                doc_string=_text(f"{self.graph.name} from {Path(self.network.source.name).name}"))


def fold_pairs(graph: Graph) -> dict[int, int]:
    """conv id -> id of the batch norm that alone reads it, for --fold-bn."""
    users = graph.consumers()
    pairs = {}
    for node in graph.nodes:
        if isinstance(node.op, BatchNorm):
            conv = graph.nodes[node.inputs[0]]
            if isinstance(conv.op, Conv) and not conv.op.transposed and users[conv.id] == [node.id]:
                pairs[conv.id] = node.id
    return pairs


def _dims(shape) -> tuple[int, ...]:
    return (shape.channels, *shape.spatial)


def _where(node: Node) -> str:
    """`vgg16.arch:12`, then the block uses that led there."""
    spans = (node.span, *reversed(node.trace))
    places = [_text(f"{Path(s.source.name).name}:{s.line}") for s in spans]
    return places[0] + "".join(f" (in a block used at {p})" for p in places[1:])


def _text(text: str) -> str:
    """A string protobuf can store (UTF-8): a file name's undecodable bytes as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
