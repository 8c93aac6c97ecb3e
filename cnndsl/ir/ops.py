"""Layer kinds. One class per kind holds everything about it: attributes, output
shape, parameters, MACs, other ops and receptive-field step.

Every op answers the same questions, given its input shapes `ins` and output `out`:
  infer(ins) -> Shape           raises ShapeProblem with the arithmetic
  weights(ins, out), biases(ins, out), macs(ins, out), other_ops(ins, out) -> int
  windows(ins) -> tuple[Window, ...] | None   the RF step per spatial axis (None: pointwise)
  inplace -> bool               True when the slides' memory column doesn't count the output
  label(ins, out) -> str        the slide's row name, e.g. CONV3-64, POOL2, FC-4096
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnndsl.ir.shape import MAX_DIM, Shape, ShapeProblem, Window, slide

Shapes = tuple[Shape, ...]


def _kernel_text(kernel: tuple[int, ...]) -> str:
    return str(kernel[0]) if len(set(kernel)) == 1 and len(kernel) == 2 else "x".join(map(str, kernel))


def _spatial(op_name: str, ins: Shapes, rank: int) -> Shape:
    x = ins[0]
    if len(x.spatial) != rank:
        have = f"a flat vector of {x.channels}" if not x.spatial else f"a {len(x.spatial)}D input ({x.text()})"
        raise ShapeProblem(f"{op_name} needs a {rank}D input, but gets {have}",
                           "kernel sizes give the dimensionality: 3 is 1D, 3x3 is 2D, 3x3x3 is 3D")
    return x


def _slide(ins: Shapes, windows: tuple[Window, ...], ceil: bool, what: str, **rules: bool) -> tuple[int, ...]:
    return slide(ins[0].spatial, windows, ceil, what, **rules)


class _Pointwise:
    """Defaults for ops that keep the shape and have no weights."""

    inplace = False
    data_inputs = None  # how many leading inputs carry data; the rest only give a shape (None: all)

    def infer(self, ins: Shapes) -> Shape:
        return ins[0]

    def weights(self, ins: Shapes, out: Shape) -> int:
        return 0

    def biases(self, ins: Shapes, out: Shape) -> int:
        return 0

    def macs(self, ins: Shapes, out: Shape) -> int:
        return 0

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return out.numel

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return None


@dataclass(frozen=True, slots=True)
class Input(_Pointwise):
    shape: Shape

    def infer(self, ins: Shapes) -> Shape:
        return self.shape

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def label(self, ins: Shapes, out: Shape) -> str:
        return "INPUT"


@dataclass(frozen=True, slots=True)
class Conv(_Pointwise):
    """Convolution (1D/2D/3D by the kernel's rank), grouped, dilated, or transposed."""

    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    bias: bool = True
    transposed: bool = False
    output_pad: tuple[int, ...] = ()

    def _windows(self) -> tuple[Window, ...]:
        return tuple(Window(*w) for w in zip(self.kernel, self.stride, self.pad, self.dilation))

    def infer(self, ins: Shapes) -> Shape:
        x = _spatial("up-conv" if self.transposed else "conv", ins, len(self.kernel))
        for c, what in ((x.channels, "input"), (self.out_channels, "output")):
            if c % self.groups:
                raise ShapeProblem(f"groups {self.groups} doesn't divide the {what} channels ({c})",
                                   f"use a number of groups that divides both {x.channels} and {self.out_channels}")
        if self.transposed:
            spatial = tuple((n - 1) * w.stride - 2 * w.pad + w.extent + op
                            for n, w, op in zip(x.spatial, self._windows(), self.output_pad or (0,) * len(x.spatial)))
            if min(spatial) <= 0:
                raise ShapeProblem(f"up-conv gives a non-positive size {spatial}")
            return Shape(self.out_channels, spatial)
        what = f"{'x'.join(map(str, self.kernel))} conv with stride {_kernel_text(self.stride)}"
        return Shape(self.out_channels, _slide(ins, self._windows(), False, what))

    def weights(self, ins: Shapes, out: Shape) -> int:
        return math.prod(self.kernel) * (ins[0].channels // self.groups) * self.out_channels

    def biases(self, ins: Shapes, out: Shape) -> int:
        return self.out_channels if self.bias else 0

    def macs(self, ins: Shapes, out: Shape) -> int:
        if self.transposed:  # every input pixel scatters a kernel into the output
            return ins[0].numel * (self.out_channels // self.groups) * math.prod(self.kernel)
        return out.numel * (ins[0].channels // self.groups) * math.prod(self.kernel)

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        if self.transposed:  # each output sees ceil(k/s) inputs; jump shrinks by s
            return None
        return self._windows()

    def label(self, ins: Shapes, out: Shape) -> str:
        kind = "UPCONV" if self.transposed else "CONV"
        stride = "" if set(self.stride) == {1} else f"/{_kernel_text(self.stride)}"
        return f"{kind}{_kernel_text(self.kernel)}-{self.out_channels}{stride}"


@dataclass(frozen=True, slots=True)
class Pool(_Pointwise):
    mode: str  # "max" | "avg"
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    ceil: bool = False

    def _windows(self) -> tuple[Window, ...]:
        return tuple(Window(k, s, p) for k, s, p in zip(self.kernel, self.stride, self.pad))

    def infer(self, ins: Shapes) -> Shape:
        """PyTorch's pooling rules (aten/native/Pool.h, pool2d/pool3d_shape_check), which the
        other backends accept too: pad <= kernel // 2 on every axis, an output of at least 1
        (here: a window no larger than the padded input), and for a 3D average pool an input
        at least as large as the window without its padding ("input image smaller than kernel")."""
        x = _spatial(f"{self.mode} pool", ins, len(self.kernel))
        for w in self._windows():
            if w.pad * 2 > w.kernel:
                raise ShapeProblem(f"pad {w.pad} is more than half the {w.kernel}-wide pool window",
                                   f"PyTorch requires pad <= kernel/2 for pooling: use pad {w.kernel // 2} or less")
        what = f"{'x'.join(map(str, self.kernel))} {self.mode} pool with stride {_kernel_text(self.stride)}"
        return Shape(x.channels, _slide(ins, self._windows(), self.ceil, what, pool=True, unpadded=self.unpadded))

    @property
    def unpadded(self) -> bool:
        """Whether the window must fit the input without its padding (PyTorch's 3D average pool)."""
        return self.mode == "avg" and len(self.kernel) == 3

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return out.numel * math.prod(self.kernel)

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return self._windows()

    def label(self, ins: Shapes, out: Shape) -> str:
        name = "POOL" if self.mode == "max" else "AVGPOOL"
        stride = "" if self.stride == self.kernel else f"/{_kernel_text(self.stride)}"
        return f"{name}{_kernel_text(self.kernel)}{stride}"


@dataclass(frozen=True, slots=True)
class GlobalPool(_Pointwise):
    """Pool each channel over its whole extent to 1 (1x1 in 2D; max-over-time in 1D)."""

    mode: str

    def infer(self, ins: Shapes) -> Shape:
        if not ins[0].spatial:
            raise ShapeProblem("global pool needs a spatial input, but gets a flat vector")
        return Shape(ins[0].channels, (1,) * len(ins[0].spatial))

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return ins[0].numel

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(n) for n in ins[0].spatial)

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"GLOBAL{'AVG' if self.mode == 'avg' else 'MAX'}POOL"


@dataclass(frozen=True, slots=True)
class Linear(_Pointwise):
    """Fully connected; flattens its input first, as the slides' FC does."""

    out_features: int
    bias: bool = True

    def infer(self, ins: Shapes) -> Shape:
        return Shape(self.out_features)

    def weights(self, ins: Shapes, out: Shape) -> int:
        return ins[0].numel * self.out_features

    def biases(self, ins: Shapes, out: Shape) -> int:
        return self.out_features if self.bias else 0

    def macs(self, ins: Shapes, out: Shape) -> int:
        return ins[0].numel * self.out_features

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(n) for n in ins[0].spatial) or None

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"FC-{self.out_features}"


@dataclass(frozen=True, slots=True)
class Flatten(_Pointwise):
    inplace = True  # a view: no new memory

    def infer(self, ins: Shapes) -> Shape:
        return Shape(ins[0].numel)

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(n) for n in ins[0].spatial) or None

    def label(self, ins: Shapes, out: Shape) -> str:
        return "FLATTEN"


@dataclass(frozen=True, slots=True)
class Dropout(_Pointwise):
    p: float
    inplace = True

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0  # identity at inference

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"DROPOUT{self.p:g}"


@dataclass(frozen=True, slots=True)
class BatchNorm(_Pointwise):
    """Batch norm over channels: a scale (counted as a weight) and a shift (a bias)."""

    eps: float = 1e-5
    momentum: float = 0.1

    def weights(self, ins: Shapes, out: Shape) -> int:
        return ins[0].channels

    def biases(self, ins: Shapes, out: Shape) -> int:
        return ins[0].channels

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 2 * out.numel  # x * scale + shift, after folding the statistics

    def label(self, ins: Shapes, out: Shape) -> str:
        return "BN"


@dataclass(frozen=True, slots=True)
class LRN(_Pointwise):
    """Local response normalisation across channels (AlexNet)."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    def infer(self, ins: Shapes) -> Shape:
        if self.size > ins[0].channels:
            raise ShapeProblem(f"LRN {self.size} sums over {self.size} channels, but its input has only {ins[0].channels}",
                               f"fix: a window of at most {ins[0].channels} channels (AlexNet uses LRN 5)")
        return ins[0]

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return (self.size + 3) * out.numel  # squares summed over the window, scale, power, divide

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"LRN{self.size}"


@dataclass(frozen=True, slots=True)
class Activation(_Pointwise):
    """An elementwise nonlinearity (softmax: over channels). Computed in place."""

    fn: str
    alpha: float | None = None
    inplace = True

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return (3 if self.fn == "softmax" else 1) * out.numel

    def label(self, ins: Shapes, out: Shape) -> str:
        return self.fn.upper().replace("_", "")


@dataclass(frozen=True, slots=True)
class Maxout(_Pointwise):
    """Max over groups of `pieces` consecutive channels."""

    pieces: int

    def infer(self, ins: Shapes) -> Shape:
        if ins[0].channels % self.pieces:
            raise ShapeProblem(f"maxout {self.pieces} doesn't divide the {ins[0].channels} channels")
        return Shape(ins[0].channels // self.pieces, ins[0].spatial)

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"MAXOUT{self.pieces}"


def check_dims(shape: Shape) -> None:
    """Reject sizes that are zero, negative or absurd."""
    for d in (shape.channels, *shape.spatial):
        if d <= 0:
            raise ShapeProblem(f"size shrinks to {d} ({shape.text()})", "remove a downsampling layer or use a larger input")
        if d > MAX_DIM:
            raise ShapeProblem(f"size {d:,} is too large (at most {MAX_DIM:,})")
