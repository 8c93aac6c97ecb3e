"""Lowering of each IR layer kind to ONNX nodes (opset 17 or newer), one function per kind.

Every lowering computes what the PyTorch backend computes for the same weights:
pools count padding in averages (PyTorch's count_include_pad=True), softmax runs over
channels, dropout vanishes at inference, Linear is Flatten + Gemm(transB=1) on the
state dict's (out, in) weight.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from cnndsl.backends.blocks import Lazy, scale_rows
from cnndsl.ir.graph import Node
from cnndsl.ir.joins import Add, Concat, PartialConv, Resize, Shortcut, Subsample
from cnndsl.ir.ops import (LRN, Activation, BatchNorm, Conv, Dropout, Flatten, GlobalPool, Input, Linear, Maxout,
                           Pool)

if TYPE_CHECKING:
    from cnndsl.backends.onnx_emit import Builder

try:
    from typing import assert_never
except ImportError:  # Python 3.10
    def assert_never(value):
        raise AssertionError(f"unhandled: {value!r}")

ACTIVATIONS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "elu": "Elu", "tanh": "Tanh", "sigmoid": "Sigmoid",
               "softmax": "Softmax"}
SHORTCUT_BN_EPS = 1e-5  # the projection's batch norm has nn.BatchNorm2d's default, as torchvision's downsample


def lower(b: Builder, node: Node) -> None:
    """Append the ONNX nodes computing IR `node` to the builder."""
    op = node.op
    x = b.x(node.inputs[0]) if node.inputs else ""
    dims = _dims(b.shape(node.id))
    match op:
        case Conv():
            _conv(b, node, op, x)
        case Pool():
            _pool(b, node, op, x)
        case GlobalPool():
            b.add(node, "GlobalAveragePool" if op.mode == "avg" else "GlobalMaxPool", [x], dims)
        case Linear():
            _linear(b, node, op, x)
        case Flatten() if b.shape(node.inputs[0]).spatial:
            b.add(node, "Flatten", [x], dims, axis=1)
        case Flatten() | Dropout():  # already flat; dropout is the identity at inference
            b.alias(node, x)
        case BatchNorm():
            _batch_norm(b, node, op, x)
        case LRN():
            _lrn(b, node, op, x)
        case Activation():
            _activation(b, node, op, x)
        case Maxout():
            _maxout(b, node, op, x)
        case Add():
            b.add(node, "Add" if len(node.inputs) == 2 else "Sum", [b.x(i) for i in node.inputs], dims)
        case Concat():
            b.add(node, "Concat", [b.x(i) for i in node.inputs], dims, axis=1)
        case Resize():
            _resize(b, node, op, x)
        case Shortcut():
            _shortcut(b, node, op, x)
        case PartialConv():
            _partial_conv(b, node, op, x)
        case Subsample():
            _subsample(b, node, op, x)
        case Input():
            raise AssertionError("the input is the graph's input, not a node")
        case _:
            assert_never(op)


def _dims(shape) -> tuple[int, ...]:
    return (shape.channels, *shape.spatial)


def _conv(b: Builder, node: Node, op: Conv, x: str) -> None:
    attrs = dict(kernel_shape=list(op.kernel), strides=list(op.stride), pads=list(op.pad) * 2, group=op.groups)
    if not op.transposed:
        attrs["dilations"] = list(op.dilation)
    elif op.output_pad:
        attrs["output_padding"] = list(op.output_pad)
    bn = b.folds.get(node.id)  # never an up-conv
    if bn is None:
        weights = [b.param(f"{node.name}.weight")] + ([b.param(f"{node.name}.bias")] if op.bias else [])
    else:
        norm = b.graph.nodes[bn]
        bias = b.vector(f"{node.name}.bias") if op.bias else None
        weights = _folded(b, node.name, b.params[f"{node.name}.weight"], bias, norm.name, norm.op.eps)
    b.add(node, "ConvTranspose" if op.transposed else "Conv", [x, *weights], _dims(b.shape(node.id)), **attrs)


def _folded(b: Builder, conv: str, weight: np.ndarray | Lazy, bias: np.ndarray | None, bn: str, eps: float) \
        -> list[str]:
    """Conv weight and bias with the batch norm `bn` that follows folded in (in float64, then rounded
    once): w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta."""
    p = {key: b.vector(f"{bn}.{key}").astype(np.float64) for key in ("weight", "bias", "running_mean", "running_var")}
    scale = p["weight"] / np.sqrt(p["running_var"] + eps)
    shift = (0.0 if bias is None else bias.astype(np.float64)) - p["running_mean"]
    return [b.tensor(f"{conv}.weight_folded", scale_rows(weight, scale)),
            b.tensor(f"{conv}.bias_folded", shift * scale + p["bias"])]


def _batch_norm(b: Builder, node: Node, op: BatchNorm, x: str) -> None:
    if node.inputs[0] in b.folds:  # already folded into the conv before it
        b.alias(node, x)
        return
    inputs = [x] + [b.param(f"{node.name}.{key}") for key in ("weight", "bias", "running_mean", "running_var")]
    b.add(node, "BatchNormalization", inputs, _dims(b.shape(node.id)), epsilon=float(op.eps))


def _pool(b: Builder, node: Node, op: Pool, x: str) -> None:
    """MaxPool / AveragePool. In ceil mode PyTorch drops a last window that would start in the
    right padding, and onnx's shape inference does not: trim the end padding to what the kept
    windows read, which changes neither the values nor (the last window covering only what it
    covered before) the averages' divisors; ceil_mode stays on only where a window hangs over."""
    out = b.shape(node.id).spatial
    n = b.shape(node.inputs[0]).spatial
    ends, ceil = list(op.pad), False
    if op.ceil:
        for axis, (size, k, s, p) in enumerate(zip(n, op.kernel, op.stride, op.pad)):
            reach = (out[axis] - 1) * s + k - size - p  # how far the last window reaches past the input
            ends[axis] = min(max(reach, 0), p)
            ceil |= reach > ends[axis]
    attrs = dict(kernel_shape=list(op.kernel), strides=list(op.stride), pads=[*op.pad, *ends], ceil_mode=int(ceil))
    if op.mode == "avg":
        attrs["count_include_pad"] = 1
    b.add(node, "MaxPool" if op.mode == "max" else "AveragePool", [x], _dims(b.shape(node.id)), **attrs)


def _linear(b: Builder, node: Node, op: Linear, x: str) -> None:
    if b.shape(node.inputs[0]).spatial:
        x = b.add(node, "Flatten", [x], (b.shape(node.inputs[0]).numel,), part="flatten", axis=1)
    inputs = [x, b.param(f"{node.name}.weight")] + ([b.param(f"{node.name}.bias")] if op.bias else [])
    b.add(node, "Gemm", inputs, _dims(b.shape(node.id)), transB=1)


def _lrn(b: Builder, node: Node, op: LRN, x: str) -> None:
    assert op.size % 2, "the checker refuses even LRN sizes (ONNX centres them one channel away)"
    shape = b.shape(node.id)
    attrs = dict(size=op.size, alpha=float(op.alpha), beta=float(op.beta), bias=float(op.k))
    if len(shape.spatial) == 2:
        b.add(node, "LRN", [x], _dims(shape), **attrs)
        return
    # onnxruntime's LRN takes 4D input only; the window runs over channels, so fold the rest into one axis
    flat = (shape.channels, math.prod(shape.spatial), 1)
    x = b.add(node, "Reshape", [x, b.ints(f"{node.name}/shape4d", (0, *flat))], flat, part="4d")
    x = b.add(node, "LRN", [x], flat, part="lrn", **attrs)
    b.add(node, "Reshape", [x, b.ints(f"{node.name}/shape", (0, *_dims(shape)))], _dims(shape))


def _activation(b: Builder, node: Node, op: Activation, x: str) -> None:
    attrs = {"axis": 1} if op.fn == "softmax" else {}
    if op.fn in ("leaky_relu", "elu"):
        attrs["alpha"] = float(op.alpha)
    b.add(node, ACTIVATIONS[op.fn], [x], _dims(b.shape(node.id)), **attrs)


def _maxout(b: Builder, node: Node, op: Maxout, x: str) -> None:
    """Max over groups of `pieces` consecutive channels: (N, C, ...) -> (N, C/p, p, ...) -> max over axis 2."""
    out = b.shape(node.id)
    split = (out.channels, op.pieces, *out.spatial)
    x = b.add(node, "Reshape", [x, b.ints(f"{node.name}/shape", (0, *split))], split, part="split")
    if b.options.opset >= 18:  # axes became an input in opset 18
        b.add(node, "ReduceMax", [x, b.ints(f"{node.name}/axes", [2])], _dims(out), keepdims=0)
    else:
        b.add(node, "ReduceMax", [x], _dims(out), axes=[2], keepdims=0)


def _resize(b: Builder, node: Node, op: Resize, x: str) -> None:
    """Centre-crop (Slice) or zero-pad (Pad) the spatial axes to the reference's size;
    an odd difference leaves the extra row/column at the end."""
    have, want = b.shape(node.inputs[0]).spatial, b.shape(node.id).spatial
    dims = _dims(b.shape(node.id))
    if op.mode == "crop":
        starts = [(h - w) // 2 for h, w in zip(have, want)]
        ends = [s + w for s, w in zip(starts, want)]
        axes = list(range(2, 2 + len(want)))
        b.add(node, "Slice", [x, b.ints(f"{node.name}/starts", starts), b.ints(f"{node.name}/ends", ends),
                              b.ints(f"{node.name}/axes", axes)], dims)
    else:
        before = [(w - h) // 2 for h, w in zip(have, want)]
        after = [w - h - p for h, w, p in zip(have, want, before)]
        b.add(node, "Pad", [x, b.ints(f"{node.name}/pads", [0, 0, *before, 0, 0, *after])], dims)


def _shortcut(b: Builder, node: Node, op: Shortcut, x: str) -> None:
    """Identity: no node. Projection: 1x1 conv with the block's stride, then batch norm
    (torchvision's downsample.0 / downsample.1). Zero-pad: every stride-th pixel, new channels zero."""
    ins = tuple(b.shape(i) for i in node.inputs)
    if op.is_identity(ins):
        b.alias(node, x)
        return
    out = b.shape(node.id)
    rank = len(out.spatial)
    stride = [1 if ins[0].spatial == out.spatial else op.stride] * rank
    if op.mode == "projection":
        _projection(b, node, x, stride)
        return
    if stride != [1] * rank:
        axes = list(range(2, 2 + rank))
        slice_inputs = [x, b.ints(f"{node.name}/starts", [0] * rank), b.ints(f"{node.name}/ends", ins[0].spatial),
                        b.ints(f"{node.name}/axes", axes), b.ints(f"{node.name}/steps", stride)]
        x = b.add(node, "Slice", slice_inputs, (ins[0].channels, *out.spatial), part="subsample")
    extra = out.channels - ins[0].channels
    pads = [0, 0, *[0] * rank, 0, extra, *[0] * rank]
    b.add(node, "Pad", [x, b.ints(f"{node.name}/pads", pads)], _dims(out))


def _projection(b: Builder, node: Node, x: str, stride: list[int]) -> None:
    out = b.shape(node.id)
    rank = len(stride)
    attrs = dict(kernel_shape=[1] * rank, strides=stride, pads=[0] * (2 * rank))
    weight = b.params[f"{node.name}.0.weight"]
    if b.options.fold_bn:
        b.add(node, "Conv", [x, *_folded(b, f"{node.name}.0", weight, None, f"{node.name}.1", SHORTCUT_BN_EPS)],
              _dims(out), **attrs)
        return
    y = b.add(node, "Conv", [x, b.param(f"{node.name}.0.weight")], _dims(out), part="0", **attrs)
    inputs = [y] + [b.param(f"{node.name}.1.{key}") for key in ("weight", "bias", "running_mean", "running_var")]
    b.add(node, "BatchNormalization", inputs, _dims(out), epsilon=SHORTCUT_BN_EPS)


def _partial_conv(b: Builder, node: Node, op: PartialConv, x: str) -> None:
    """LeNet-5's C3 as one dense conv whose kernel is zero where the table has no connection.
    The state dict keeps only the connected kernels (n, k...), stacked row by row in table order;
    the ONNX initializer is the full (C_out, C_in, k...) kernel, so ONNX holds more numbers
    than the network has trainable parameters (it is the same function)."""
    packed = np.asarray(b.params[f"{node.name}.weight"])
    full = np.zeros((len(op.table), b.shape(node.inputs[0]).channels, *op.kernel), dtype=packed.dtype)
    at = 0
    for j, row in enumerate(op.table):
        for i in row:
            full[j, i] = packed[at]
            at += 1
    attrs = dict(kernel_shape=list(op.kernel), strides=[1] * len(op.kernel), pads=[0] * (2 * len(op.kernel)))
    b.add(node, "Conv", [x, b.tensor(f"{node.name}.weight_full", full), b.param(f"{node.name}.bias")],
          _dims(b.shape(node.id)), **attrs)


def _subsample(b: Builder, node: Node, op: Subsample, x: str) -> None:
    """LeNet-5's S2/S4: window sum x coefficient + bias, per channel; the sum is the average times
    the window size, folded into the coefficient."""
    out = b.shape(node.id)
    rank = len(op.kernel)
    per_channel = (out.channels, *(1,) * rank)
    window = math.prod(op.kernel)
    scale = b.vector(f"{node.name}.weight").astype(np.float64).reshape(per_channel) * window
    y = b.add(node, "AveragePool", [x], _dims(out), part="pool", kernel_shape=list(op.kernel),
              strides=list(op.kernel))
    y = b.add(node, "Mul", [y, b.tensor(f"{node.name}.scale", scale)], _dims(out), part="scale")
    bias = b.vector(f"{node.name}.bias").reshape(per_channel)
    b.add(node, "Add", [y, b.tensor(f"{node.name}.bias", bias)], _dims(out))
