"""How each IR op becomes PyTorch: the one place that maps layer kinds to torch.nn.

`describe` answers, for one node, which module to build at the node's name (a `Layer`:
a class and its arguments, as data) and how forward applies it (`Step.apply`). Both
the in-memory module (torch_module) and the generated source (torch_source) read it,
so they cannot disagree. No torch import here: a Layer names its class as code would.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.ir.graph import Node
from cnndsl.ir.joins import Add, Concat, PartialConv, Resize, Shortcut, Subsample
from cnndsl.ir.ops import LRN, Activation, BatchNorm, Conv, Dropout, Flatten, GlobalPool, Input, Linear, Maxout, Pool
from cnndsl.ir.shape import Shape

try:
    from typing import assert_never
except ImportError:  # Python 3.10
    def assert_never(value):
        raise AssertionError(f"unhandled op: {value!r}")

Value = object  # int | float | bool | tuple | Layer


@dataclass(frozen=True, slots=True)
class Layer:
    """An nn.Module to construct: `cls` as code names it ("nn.Conv2d", "PartialConv"),
    positional and keyword arguments (every keyword given, defaults included)."""

    cls: str
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()

    @property
    def stateless(self) -> bool:
        """No parameters or buffers: one instance may serve several places."""
        return self.cls.split(".")[-1] in STATELESS


STATELESS = {"ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Softmax", "Dropout", "LocalResponseNorm", "Maxout",
             "ZeroPadShortcut"} | {f"{kind}{r}d" for r in (1, 2, 3)
                                   for kind in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")}

# How forward applies a node:
#   call        y = layer(x)                 call_flat   y = layer(flatten(x, 1))  (FC on a map)
#   call_vec    LRN on a flat vector: y = layer(x.unsqueeze(-1)).squeeze(-1)
#   input       the network's input          same        y = x (identity shortcut)
#   flatten     y = flatten(x, 1)            add         y = x1 + x2 + ...
#   cat         y = cat([x1, x2, ...], 1)    crop / pad  y = center_crop(x, ref) / zero_pad(x, ref)


@dataclass(frozen=True, slots=True)
class Step:
    layer: Layer | None
    apply: str


def n(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """A per-axis size as torch.nn writes it: 3 for (3, 3), (1, 7) as is."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def describe(node: Node, ins: tuple[Shape, ...], out: Shape, inplace: bool = False) -> Step:
    """The module and the application of one node; `inplace`: its ReLU may overwrite its input."""
    op = node.op
    rank = len(ins[0].spatial) if ins else 0
    match op:
        case Input():
            return Step(None, "input")
        case Conv():
            return Step(conv_layer(op, ins[0].channels), "call")
        case Pool():
            kind = "MaxPool" if op.mode == "max" else "AvgPool"
            return Step(Layer(f"nn.{kind}{rank}d", (), (("kernel_size", n(op.kernel)), ("stride", n(op.stride)),
                                                         ("padding", n(op.pad)), ("ceil_mode", op.ceil))), "call")
        case GlobalPool():
            kind = "AdaptiveAvgPool" if op.mode == "avg" else "AdaptiveMaxPool"
            return Step(Layer(f"nn.{kind}{rank}d", (1,)), "call")
        case Linear():
            layer = Layer("nn.Linear", (ins[0].numel, op.out_features), (("bias", op.bias),))
            return Step(layer, "call_flat" if ins[0].spatial else "call")
        case Flatten():
            return Step(None, "flatten" if ins[0].spatial else "same")
        case Dropout():
            return Step(Layer("nn.Dropout", (op.p,)), "call")
        case BatchNorm():
            return Step(batch_norm(ins[0].channels, rank, op.eps, op.momentum), "call")
        case LRN():
            layer = Layer("nn.LocalResponseNorm", (op.size,), (("alpha", op.alpha), ("beta", op.beta), ("k", op.k)))
            return Step(layer, "call" if rank else "call_vec")
        case Activation():
            return Step(activation(op, inplace), "call")
        case Maxout():
            return Step(Layer("Maxout", (op.pieces,)), "call")
        case Add():
            return Step(None, "add")
        case Concat():
            return Step(None, "cat")
        case Resize():
            return Step(None, {"crop": "crop", "pad": "pad"}[op.mode])
        case Shortcut():
            if op.is_identity(ins):
                return Step(None, "same")
            return Step(shortcut_layer(op, ins[0].channels, out.channels, rank), "call")
        case PartialConv():
            return Step(Layer("PartialConv", (op.table, op.kernel)), "call")
        case Subsample():
            return Step(Layer("Subsample", (ins[0].channels, op.kernel)), "call")
        case _:
            assert_never(op)


def conv_layer(op: Conv, in_channels: int) -> Layer:
    rank = len(op.kernel)
    if op.transposed:
        return Layer(f"nn.ConvTranspose{rank}d", (in_channels, op.out_channels),
                     (("kernel_size", n(op.kernel)), ("stride", n(op.stride)), ("padding", n(op.pad)),
                      ("output_padding", n(op.output_pad or (0,) * rank)), ("groups", op.groups), ("bias", op.bias)))
    return Layer(f"nn.Conv{rank}d", (in_channels, op.out_channels),
                 (("kernel_size", n(op.kernel)), ("stride", n(op.stride)), ("padding", n(op.pad)),
                  ("dilation", n(op.dilation)), ("groups", op.groups), ("bias", op.bias)))


def batch_norm(channels: int, rank: int, eps: float = 1e-5, momentum: float = 0.1) -> Layer:
    return Layer(f"nn.BatchNorm{max(rank, 1)}d", (channels,), (("eps", eps), ("momentum", momentum)))


def activation(op: Activation, inplace: bool) -> Layer:
    match op.fn:
        case "relu":
            return Layer("nn.ReLU", (), (("inplace", inplace),))
        case "leaky_relu":
            return Layer("nn.LeakyReLU", (op.alpha,))
        case "elu":
            return Layer("nn.ELU", (), (("alpha", op.alpha),))
        case "tanh":
            return Layer("nn.Tanh")
        case "sigmoid":
            return Layer("nn.Sigmoid")
        case "softmax":
            return Layer("nn.Softmax", (), (("dim", 1),))  # over channels
        case other:
            raise ValueError(f"the PyTorch backend has no activation {other!r}")


def shortcut_layer(op: Shortcut, in_channels: int, out_channels: int, rank: int) -> Layer:
    """The module a non-identity shortcut needs: 1x1 conv (stride s, no bias) + BN, or option A."""
    if op.mode == "zero-pad":
        return Layer("ZeroPadShortcut", (op.stride, out_channels))
    if op.mode == "projection":
        conv = Layer(f"nn.Conv{rank}d", (in_channels, out_channels),
                     (("kernel_size", 1), ("stride", op.stride), ("padding", 0), ("dilation", 1), ("groups", 1),
                      ("bias", False)))
        return Layer("nn.Sequential", (conv, batch_norm(out_channels, rank)))
    raise ValueError(f"the PyTorch backend has no shortcut {op.mode!r}")

