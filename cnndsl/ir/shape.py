"""Tensor shapes as the slides print them (HxWxC), and the sliding-window arithmetic.

The fit rules are pure integer predicates (`fits`, `unread`, `out_size`): O(1), no
exceptions, so a hint can test candidate paddings and sizes without building messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_DIM = 2**31 - 1
HINT_STEPS = 64  # candidate paddings a hint tries; a hint must not take long


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
    """Raised by an op's shape rule; the builder attaches the span and notes. `refit`: set when
    a window doesn't fit, so that shape inference can suggest a network input size instead."""

    def __init__(self, message: str, *notes: str, refit: Refit | None = None):
        super().__init__(message)
        self.message = message
        self.notes = notes
        self.refit = refit


@dataclass(frozen=True, slots=True)
class Refit:
    """A window that doesn't fit: the axes it fails on, and the fixes that keep the input size."""

    axes: tuple[int, ...]
    options: tuple[str, ...]  # e.g. "`pad 1`", "`ceil`"
    lead: str = "fix: use"

    def note(self, sizes: tuple[str, ...]) -> str:
        """The fix hint, offering `sizes` ("an input of 9x9 here", "`input 227x227x3`") last."""
        options = (*self.options, " or ".join(sizes)) if sizes else self.options
        return f"{self.lead} " + ", or ".join(options) if options else "fix: change the window, its stride or the input size"


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


# -- the arithmetic: pure predicates ---------------------------------------------------------

def out_size(size: int, w: Window, ceil: bool) -> int:
    """Output length of a window sliding over `size` inputs, PyTorch's rule (may be < 1)."""
    span = size + 2 * w.pad - w.extent
    out = (-(-span // w.stride) if ceil else span // w.stride) + 1
    if ceil and (out - 1) * w.stride >= size + w.pad:  # PyTorch: the last window must start inside
        out -= 1
    return out


def lost(size: int, w: Window) -> int:
    """Real (non-padding) input positions after the last window when rounding down.

    The last window ends at (span // stride) * stride + extent in padded coordinates and the
    real input at size + pad, so what is left is span % stride - pad (<= 0: nothing)."""
    return (size + 2 * w.pad - w.extent) % w.stride - w.pad


def fits(size: int, w: Window, ceil: bool = False, unpadded: bool = False) -> bool:
    """True when the window fits `size`: no larger than the padded input (the unpadded one if
    `unpadded`), and, rounding down, leaving no real input unread beyond the gap the stride
    leaves between windows anyway (rounding that only drops padding is fine)."""
    room = size if unpadded else size + 2 * w.pad
    if room < w.extent or size + 2 * w.pad < w.extent:
        return False
    return ceil or lost(size, w) <= max(0, w.stride - w.extent)


def next_fits(size: int, w: Window, up: bool, unpadded: bool = False) -> int | None:
    """The nearest size above (`up`) or below `size` that `w` fits rounding down; O(1).

    Sizes fit by their residue r = (size + 2*pad - extent) mod stride: r <= pad + gap. Above,
    the next fit is where r wraps to 0; below, where r has dropped to that bound."""
    least = w.extent if unpadded else max(1, w.extent - 2 * w.pad)
    if size < least:
        if not up:
            return None
        size = least
    bound = w.pad + max(0, w.stride - w.extent)
    r = (size + 2 * w.pad - w.extent) % w.stride
    if r <= bound:
        return size
    found = size + w.stride - r if up else size - (r - bound)
    return found if least <= found <= MAX_DIM else None


def fitting_pad(size: int, w: Window, most: int | None = None) -> int | None:
    """The smallest padding above w.pad (at most `most`) with which `w` fits `size`. Bounded:
    from pad >= stride - 1 on, nothing is ever lost, so a few steps find it or none exists."""
    top = w.pad + HINT_STEPS if most is None else min(most, w.pad + HINT_STEPS)
    for pad in range(w.pad + 1, top + 1):
        if fits(size, Window(w.kernel, w.stride, pad, w.dilation)):
            return pad
    return None


Chain = tuple[tuple[Window, bool, bool], ...]  # (window, ceil, unpadded) per step, input first


def chain_fits(size: int, chain: Chain, room_only: bool = False) -> bool:
    """True when every step of a chain fits, each sliding over the last one's output
    (`room_only`: when no window is larger than its input, rounding aside)."""
    for w, ceil, unpadded in chain:
        if not fits(size, w, ceil or room_only, unpadded):
            return False
        size = out_size(size, w, ceil)
    return True


def chain_sizes(size: int, chain: Chain, budget: int = 100_000) -> tuple[int | None, int | None, int]:
    """The nearest input sizes below and above `size` for which the whole chain fits (None: none
    found), and a bound on the window steps spent, at most about `budget`.

    Room (no window larger than its input) only grows with the input, so the smallest size
    with room is found by bisection; above it, fitting is periodic with period prod(strides)
    (adding it adds whole strides at every step), so one period each way finds the nearest
    fit if there is one."""
    period = math.prod(w.stride for w, _, _ in chain)
    reach = min(period, max(0, budget - 32 * len(chain)) // (2 * max(1, len(chain))))
    spent = (2 * reach + 32) * len(chain)
    low, high = size + 1, MAX_DIM
    if not chain_fits(high, chain, room_only=True):
        return _search(size - 1, size - reach - 1, chain), None, spent
    while low < high:  # 31 halvings at most
        mid = (low + high) // 2
        low, high = (low, mid) if chain_fits(mid, chain, room_only=True) else (mid + 1, high)
    return _search(size - 1, size - reach - 1, chain), _search(low, min(MAX_DIM, low + reach), chain), spent


def _search(start: int, stop: int, chain: Chain) -> int | None:
    step = 1 if stop > start else -1
    return next((n for n in range(start, stop, step) if n >= 1 and chain_fits(n, chain)), None)


# -- the diagnostics ----------------------------------------------------------------------------

def sized(spatial: tuple[int, ...]) -> str:
    """How a spatial size reads in a sentence: `length 128` in 1D, `7x7` or `8x8x8` otherwise."""
    return f"length {spatial[0]}" if len(spatial) == 1 else "x".join(map(str, spatial))


def slide(spatial: tuple[int, ...], windows: tuple[Window, ...], ceil: bool, what: str, *,
          pool: bool = False, unpadded: bool = False) -> tuple[int, ...]:
    """Output extent of `windows` sliding over `spatial` (one window per axis), PyTorch's rule.

    Raises ShapeProblem, with the arithmetic and a fix, when a window is larger than the padded
    input (the unpadded one if `unpadded`), or when rounding down leaves real input unread.
    `pool`: a fix may add `ceil`, and a padding may be at most half the window (PyTorch's rule)."""
    small = [axis for axis, (n, w) in enumerate(zip(spatial, windows)) if not fits(n, w, True, unpadded)]
    if small:
        raise _too_small(spatial, windows, small, what, pool, unpadded)
    bad = [axis for axis, (n, w) in enumerate(zip(spatial, windows)) if not fits(n, w, ceil, unpadded)]
    if bad:
        n, w = spatial[bad[0]], windows[bad[0]]
        count = lost(n, w)
        noun = _ROWS.get(len(spatial), _ROWS[1])[count > 1]
        refit = Refit(tuple(bad), _keep_size_fixes(spatial, windows, bad, pool))
        sizes = [s for s in (_resized(spatial, windows, bad, up, unpadded) for up in (True, False)) if s is not None]
        here = (f"an input of {' or '.join(map(sized, sizes))} here".replace(" or length ", " or "),) if sizes else ()
        raise ShapeProblem(
            f"{what} doesn't fit {_an(spatial)} input: {_formula(n, w)} = {_fmt((n + 2 * w.pad - w.extent) / w.stride + 1)}, "
            f"so the last {f'{count} {noun}' if count > 1 else noun} of the input would never be read",
            refit.note(here), refit=refit)
    return tuple(out_size(n, w, ceil) for n, w in zip(spatial, windows))


_ROWS = {1: ("position", "positions"), 2: ("row/column", "rows/columns"), 3: ("plane", "planes")}


def _an(spatial: tuple[int, ...]) -> str:
    return f"a length-{spatial[0]}" if len(spatial) == 1 else f"a {sized(spatial)}"


def _too_small(spatial: tuple[int, ...], windows: tuple[Window, ...], small: list[int], what: str,
               pool: bool, unpadded: bool) -> ShapeProblem:
    n, w = spatial[small[0]], windows[small[0]]
    if unpadded and n < w.extent:
        least = tuple(max(d, v.extent) for d, v in zip(spatial, windows))
        return ShapeProblem(
            f"{what} doesn't fit {_an(spatial)} input: PyTorch's 3D average pool needs the input to be at least "
            f"as large as its window ({n} < {w.extent}), padding or not",
            f"fix: use an input of at least {sized(least)} here, a window of at most {n}, or a max pool",
            refit=Refit(tuple(small), (f"a window of at most {n}", "a max pool")))
    return ShapeProblem(
        f"{what} doesn't fit {_an(spatial)} input: {_formula(n, w)} = {_fmt((n + 2 * w.pad - w.extent) / w.stride + 1)}, "
        f"the window ({w.extent}) is larger than the padded input ({n + 2 * w.pad})",
        f"the input is already {n} wide here; remove a downsampling layer before it, or pad",
        refit=Refit(tuple(small), _keep_size_fixes(spatial, windows, small, pool)[:1],
                    "fix: remove a downsampling layer before it, or use"))


def _keep_size_fixes(spatial: tuple[int, ...], windows: tuple[Window, ...], bad: list[int], pool: bool) \
        -> tuple[str, ...]:
    """The smallest padding that fits (a pool's: at most half its window), and `ceil` for a
    pool (with which nothing is left unread)."""
    options = []
    pads = [fitting_pad(spatial[a], windows[a], windows[a].kernel // 2 if pool else None) for a in bad]
    if None not in pads:
        new = [w.pad for w in windows]
        for a, p in zip(bad, pads):
            new[a] = p
        options.append(f"`pad {axes_text(new)}`")
    return (*options, "`ceil`") if pool else tuple(options)


def _resized(spatial, windows, bad, up: bool, unpadded: bool) -> tuple[int, ...] | None:
    new = list(spatial)
    for a in bad:
        found = next_fits(spatial[a], windows[a], up, unpadded)
        if found is None:
            return None
        new[a] = found
    return tuple(new)


def axes_text(values) -> str:
    """A per-axis option value as one writes it: `2` for all axes alike, else `1x2`."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _formula(size: int, w: Window) -> str:
    pad = f" + 2*{w.pad}" if w.pad else ""
    return f"({size}{pad} - {w.extent})/{w.stride} + 1"


def _fmt(x: float) -> str:
    if x == int(x):
        return str(int(x))
    text = f"{x:.2f}"
    return f"{x:.10g}" if float(text) == int(float(text)) else text  # 1.999999997, not 2.00
