"""Tensor shapes as the slides print them (HxWxC), and the sliding-window arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_DIM = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Shape:
    """Channels and spatial extent of one sample; `spatial == ()` for a flat vector."""

    channels: int
    spatial: tuple[int, ...] = ()

    @property
    def numel(self) -> int:
        return self.channels * math.prod(self.spatial)

    def hwc(self, rank: int | None = None) -> tuple[int, ...]:
        """Slide order: spatial dims, then channels; flat vectors padded with 1s to `rank`."""
        spatial = self.spatial or (1,) * (rank or 0)
        return (*spatial, self.channels)

    def text(self, rank: int | None = None) -> str:
        return "x".join(str(d) for d in self.hwc(rank))


class ShapeProblem(Exception):
    """Raised by an op's shape rule; the builder attaches the span and notes."""

    def __init__(self, message: str, *notes: str):
        super().__init__(message)
        self.message = message
        self.notes = notes


@dataclass(frozen=True, slots=True)
class Window:
    """One axis of a sliding window: kernel, stride, padding, dilation."""

    kernel: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1

    @property
    def extent(self) -> int:
        return self.dilation * (self.kernel - 1) + 1


def window_out(size: int, w: Window, ceil: bool, what: str, shown: str | None = None) -> int:
    """Output length of a window sliding over `size` inputs, PyTorch's rule.

    Rounding down is an error when it leaves real (non-padding) input unread beyond
    the gap the stride leaves anyway; rounding that only drops padding is fine.
    """
    shown = shown or f"{size}x{size}"
    span = size + 2 * w.pad - w.extent
    if span < 0:
        raise ShapeProblem(
            f"{what} doesn't fit a {shown} input: {_formula(size, w)} = "
            f"{_fmt(span / w.stride + 1)}, the window ({w.extent}) is larger than the padded input ({size + 2 * w.pad})",
            f"the input is already {size} wide here; remove a downsampling layer before it, or pad",
        )
    out = (-(-span // w.stride) if ceil else span // w.stride) + 1
    if ceil and (out - 1) * w.stride >= size + w.pad:  # PyTorch: the last window must start inside
        out -= 1
    if not ceil and span % w.stride:
        covered = (out - 1) * w.stride + w.extent  # padded positions read
        unread = size + w.pad - covered  # real input positions after the last window
        if unread > max(0, w.stride - w.extent):
            raise ShapeProblem(
                f"{what} doesn't fit a {shown} input: {_formula(size, w)} = {_fmt(span / w.stride + 1)}, "
                f"so the last {f'{unread} rows/columns' if unread > 1 else 'row/column'} of the input would never be read",
                _fix(size, w),
            )
    return out


def _formula(size: int, w: Window) -> str:
    pad = f" + 2*{w.pad}" if w.pad else ""
    return f"({size}{pad} - {w.extent})/{w.stride} + 1"


def _fmt(x: float) -> str:
    if x == int(x):
        return str(int(x))
    text = f"{x:.2f}"
    return f"{x:.10g}" if float(text) == int(float(text)) else text  # 1.999999997, not 2.00


def _fix(size: int, w: Window) -> str:
    """Suggest the nearest input size and the smallest padding that fit exactly or harmlessly."""
    pads = range(w.pad + 1, w.pad + min(w.extent, 64) + 1)  # bounded: a hint must not take forever
    fits = [p for p in pads if _fits(size, Window(w.kernel, w.stride, p, w.dilation))]
    bigger = size + w.stride - (size + 2 * w.pad - w.extent) % w.stride
    smaller = size - (size + 2 * w.pad - w.extent) % w.stride
    options = [f"an input of {bigger}x{bigger}"]
    if smaller >= w.extent:
        options.append(f"{smaller}x{smaller}")
    if fits:
        options.insert(0, f"pad {fits[0]}")
    return "fix: use " + ", or ".join(options)


def _fits(size: int, w: Window) -> bool:
    try:
        window_out(size, w, False, "", "")
    except ShapeProblem:
        return False
    return True
