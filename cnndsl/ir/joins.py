"""Ops with more than one input: add, concat, residual shortcut, crop and pad for skips;
and LeNet-5's own layers (partial connection table, trainable subsampling).

Same protocol as cnndsl.ir.ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnndsl.ir.ops import Shapes, _Pointwise, _slide, _spatial
from cnndsl.ir.shape import Shape, ShapeProblem, Window


@dataclass(frozen=True, slots=True)
class Add(_Pointwise):
    """Elementwise sum of branches of the same shape (ResNet's `+`)."""

    def infer(self, ins: Shapes) -> Shape:
        first = ins[0]
        for i, x in enumerate(ins[1:], 2):
            if x.channels != first.channels:
                raise ShapeProblem(f"+ of mismatched channels: branch 1 has {first.channels}, branch {i} has {x.channels}",
                                   "give every branch the same output width")
            if x.spatial != first.spatial:
                raise ShapeProblem(f"+ of mismatched sizes: branch 1 is {first.text()}, branch {i} is {x.text()}")
        return first

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return (len(ins) - 1) * out.numel

    def label(self, ins: Shapes, out: Shape) -> str:
        return "ADD"


@dataclass(frozen=True, slots=True)
class Concat(_Pointwise):
    """Concatenation along channels (Inception's filter concatenation, U-Net's copy)."""

    def infer(self, ins: Shapes) -> Shape:
        first = ins[0]
        for i, x in enumerate(ins[1:], 2):
            if x.spatial != first.spatial:
                raise ShapeProblem(f"concat of mismatched sizes: branch 1 is {first.text()}, branch {i} is {x.text()}",
                                   "add `, crop` or `, pad` to a skip, or pad the branches to keep sizes equal")
        return Shape(sum(x.channels for x in ins), first.spatial)

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0  # a copy, counted in memory

    def label(self, ins: Shapes, out: Shape) -> str:
        return "CONCAT"


@dataclass(frozen=True, slots=True)
class Resize(_Pointwise):
    """Centre-crop (`crop`) or zero-pad (`pad`) input 0 to the spatial size of input 1."""

    mode: str
    data_inputs = 1  # input 1 only gives the target size

    def infer(self, ins: Shapes) -> Shape:
        x, ref = ins
        if len(x.spatial) != len(ref.spatial):
            raise ShapeProblem(f"cannot {self.mode} {x.text()} to {ref.text()}: different ranks")
        bad = any(a < b for a, b in zip(x.spatial, ref.spatial)) if self.mode == "crop" else \
            any(a > b for a, b in zip(x.spatial, ref.spatial))
        if bad:
            raise ShapeProblem(f"cannot {self.mode} {x.text()} to the size of {ref.text()}")
        return Shape(x.channels, ref.spatial)

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def label(self, ins: Shapes, out: Shape) -> str:
        return self.mode.upper()


@dataclass(frozen=True, slots=True)
class Shortcut(_Pointwise):
    """The residual shortcut from a block's input (input 0) to the shape of its output (input 1).

    Identity when the shapes match. Otherwise `projection` is a 1x1 conv with the
    block's stride plus batch norm (the paper's option B, torchvision's downsample);
    `zero-pad` subsamples by the stride and pads channels with zeros (option A).
    """

    stride: int
    mode: str = "projection"
    data_inputs = 1  # input 1 (the block's output) only gives the target shape

    def is_identity(self, ins: Shapes) -> bool:
        return ins[0] == ins[1]

    def infer(self, ins: Shapes) -> Shape:
        x, y = ins
        if len(x.spatial) != len(y.spatial):
            raise ShapeProblem(f"residual shortcut from {x.text()} to {y.text()}: different ranks")
        sub = tuple(-(-n // self.stride) for n in x.spatial)
        if sub != y.spatial and x.spatial != y.spatial:
            raise ShapeProblem(f"residual shortcut cannot take {x.text()} to {y.text()} with stride {self.stride}",
                               *_stride_hint(x, y, self.stride))
        if self.mode == "zero-pad" and y.channels < x.channels:
            raise ShapeProblem(f"zero-pad shortcut cannot reduce {x.channels} channels to {y.channels}")
        return y

    def weights(self, ins: Shapes, out: Shape) -> int:
        if self.is_identity(ins) or self.mode != "projection":
            return 0
        return ins[0].channels * out.channels + out.channels  # 1x1 conv (no bias) + BN scale

    def biases(self, ins: Shapes, out: Shape) -> int:
        return 0 if self.is_identity(ins) or self.mode != "projection" else out.channels

    def macs(self, ins: Shapes, out: Shape) -> int:
        if self.is_identity(ins) or self.mode != "projection":
            return 0
        return out.numel * ins[0].channels

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0 if self.is_identity(ins) or self.mode != "projection" else 2 * out.numel

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(1, self.stride) for _ in ins[0].spatial)

    def label(self, ins: Shapes, out: Shape) -> str:
        if self.is_identity(ins):
            return "IDENTITY"
        return f"PROJ1-{out.channels}/{self.stride}" if self.mode == "projection" else f"ZEROPAD/{self.stride}"

    @property
    def inplace(self) -> bool:  # identity adds no memory; judged per shapes in the report
        return False


def _stride_hint(x: Shape, y: Shape, stride: int) -> tuple[str, ...]:
    """What to write when a residual group's output size is not its input's divided by its stride."""
    r = x.spatial[0] // y.spatial[0] if x.spatial and y.spatial and y.spatial[0] else 0
    if stride == 1 and r > 1 and tuple(-(-a // r) for a in x.spatial) == y.spatial:
        return (f"the group shrinks its input {r}x: write `, stride {r}` on the group itself (after `residual`) so that "
                "the shortcut strides too; a stride inside the brackets does not reach it",)
    return ("the group's stride must be the ratio of its input and output sizes",)


@dataclass(frozen=True, slots=True)
class PartialConv(_Pointwise):
    """LeNet-5's C3: output map j sees only the input maps in `table[j]`."""

    table: tuple[tuple[int, ...], ...]
    kernel: tuple[int, ...]

    def infer(self, ins: Shapes) -> Shape:
        x = _spatial("conv", ins, len(self.kernel))
        for j, row in enumerate(self.table):
            bad = [i for i in row if not 0 <= i < x.channels]
            if bad:
                raise ShapeProblem(f"connection table row {j} names input map {bad[0]}, but there are {x.channels} maps (0..{x.channels - 1})")
        what = f"{'x'.join(map(str, self.kernel))} conv"
        return Shape(len(self.table), _slide(ins, tuple(Window(k) for k in self.kernel), False, what))

    def weights(self, ins: Shapes, out: Shape) -> int:
        return sum(len(row) for row in self.table) * math.prod(self.kernel)

    def biases(self, ins: Shapes, out: Shape) -> int:
        return len(self.table)

    def macs(self, ins: Shapes, out: Shape) -> int:
        return math.prod(out.spatial) * sum(len(row) for row in self.table) * math.prod(self.kernel)

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return 0

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(k) for k in self.kernel)

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"C{'x'.join(map(str, self.kernel))}-{len(self.table)}-TABLE"


@dataclass(frozen=True, slots=True)
class Subsample(_Pointwise):
    """LeNet-5's S2/S4: sum of a window times a trainable coefficient plus a trainable bias."""

    kernel: tuple[int, ...]

    def infer(self, ins: Shapes) -> Shape:
        what = f"{'x'.join(map(str, self.kernel))} subsampling"
        _spatial("subsampling", ins, len(self.kernel))
        return Shape(ins[0].channels, _slide(ins, tuple(Window(k, k) for k in self.kernel), False, what))

    def weights(self, ins: Shapes, out: Shape) -> int:
        return ins[0].channels

    def biases(self, ins: Shapes, out: Shape) -> int:
        return ins[0].channels

    def macs(self, ins: Shapes, out: Shape) -> int:
        return out.numel  # one multiply by the coefficient per output

    def other_ops(self, ins: Shapes, out: Shape) -> int:
        return out.numel * math.prod(self.kernel)

    def windows(self, ins: Shapes) -> tuple[Window, ...] | None:
        return tuple(Window(k, k) for k in self.kernel)

    def label(self, ins: Shapes, out: Shape) -> str:
        return f"SUBSAMPLE{'x'.join(map(str, self.kernel))}"
