"""The parameters of a network, shared by every backend: their names (the PyTorch
module's state_dict keys), shapes, order, and a numpy initialiser under a seed, so
that a seed gives identical weights in the PyTorch module and the ONNX graph.

Order is structural: node order, i.e. source order, main path before shortcut,
branches left to right, as torchvision registers its modules. Naming: a node's
tensors live under its dotted name (`conv2_x.0.conv1.weight`); a projection
shortcut holds a conv and a BN as `downsample.0` and `downsample.1` like torchvision.

No torch here: numpy only.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cnndsl.ir.graph import Graph, Node
from cnndsl.ir.joins import PartialConv, Shortcut, Subsample
from cnndsl.ir.ops import BatchNorm, Conv, Linear
from cnndsl.ir.shape import Shape


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One tensor of the state dict.

    role: weight | bias | bn_weight | bn_bias | running_mean | running_var | num_batches_tracked
    trainable: False for BN's buffers (they are in the state dict but are not parameters)
    """

    key: str
    shape: tuple[int, ...]
    role: str
    node: int
    fan_out: int = 1

    @property
    def trainable(self) -> bool:
        return self.role not in ("running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int, node: int) -> list[ParamSpec]:
    return [ParamSpec(f"{prefix}.weight", (c,), "bn_weight", node), ParamSpec(f"{prefix}.bias", (c,), "bn_bias", node),
            ParamSpec(f"{prefix}.running_mean", (c,), "running_mean", node),
            ParamSpec(f"{prefix}.running_var", (c,), "running_var", node),
            ParamSpec(f"{prefix}.num_batches_tracked", (), "num_batches_tracked", node)]


def node_params(node: Node, ins: tuple[Shape, ...], out: Shape) -> list[ParamSpec]:
    """The tensors one node owns, in registration order."""
    op, name, i = node.op, node.name, node.id
    match op:
        case Conv(transposed=False):
            cin = ins[0].channels // op.groups
            shape = (op.out_channels, cin, *op.kernel)
            specs = [ParamSpec(f"{name}.weight", shape, "weight", i, op.out_channels * math.prod(op.kernel))]
            return specs + ([ParamSpec(f"{name}.bias", (op.out_channels,), "bias", i)] if op.bias else [])
        case Conv(transposed=True):
            shape = (ins[0].channels, op.out_channels // op.groups, *op.kernel)
            specs = [ParamSpec(f"{name}.weight", shape, "weight", i, ins[0].channels * math.prod(op.kernel))]
            return specs + ([ParamSpec(f"{name}.bias", (op.out_channels,), "bias", i)] if op.bias else [])
        case Linear():
            specs = [ParamSpec(f"{name}.weight", (op.out_features, ins[0].numel), "linear_weight", i)]
            return specs + ([ParamSpec(f"{name}.bias", (op.out_features,), "bias", i)] if op.bias else [])
        case BatchNorm():
            return _bn(name, ins[0].channels, i)
        case Shortcut() if op.mode == "projection" and not op.is_identity(ins):
            w = ParamSpec(f"{name}.0.weight", (out.channels, ins[0].channels, *(1,) * len(out.spatial)), "weight", i,
                          out.channels)
            return [w] + _bn(f"{name}.1", out.channels, i)
        case PartialConv():
            n = sum(len(row) for row in op.table)
            return [ParamSpec(f"{name}.weight", (n, *op.kernel), "weight", i, len(op.table) * math.prod(op.kernel)),
                    ParamSpec(f"{name}.bias", (len(op.table),), "bias", i)]
        case Subsample():
            c = ins[0].channels
            return [ParamSpec(f"{name}.weight", (c,), "subsample_weight", i), ParamSpec(f"{name}.bias", (c,), "bias", i)]
        case _:
            return []


def param_specs(graph: Graph, shapes: tuple[Shape, ...]) -> list[ParamSpec]:
    """Every tensor of the network's state dict, in structural order."""
    specs: list[ParamSpec] = []
    for node in graph.nodes:
        specs += node_params(node, tuple(shapes[i] for i in node.inputs), shapes[node.id])
    return specs


BLOCK = 1 << 18  # elements drawn by one generator: the unit shared out to threads, and written at a time


class Lazy:
    """A float tensor computed block by block when it is needed. A block is whole rows (along
    the first axis), about BLOCK elements. A writer streams it a block at a time and never
    holds it whole (VGG16 has 138M weights); `np.asarray(lazy)` computes all of it, the blocks
    in parallel threads. Subclasses give `shape`, `dtype` and `fill`."""

    __slots__ = ()
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def row(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def length(self) -> int:
        """Elements in a block (the last may hold fewer): whole rows, BLOCK or just under; a row
        longer than BLOCK (an FC on a large map) is cut into blocks of BLOCK, so no block, and no
        buffer a writer holds, is larger than BLOCK elements."""
        return BLOCK // self.row * self.row if self.row <= BLOCK else BLOCK

    @property
    def nblocks(self) -> int:
        return -(-self.size // self.length)

    def span(self, k: int) -> tuple[int, int]:
        """Block k: the flat elements [start, stop)."""
        return k * self.length, min(self.size, (k + 1) * self.length)

    def fill(self, k: int, out: np.ndarray) -> None:
        """Write block k into `out` (flat, of the block's length and this dtype)."""
        raise NotImplementedError

    def block(self, k: int) -> np.ndarray:
        start, stop = self.span(k)
        out = np.empty(stop - start, self.dtype)
        self.fill(k, out)
        return out

    def astype(self, dtype) -> Lazy:
        return self if np.dtype(dtype) == self.dtype else Cast(self, np.dtype(dtype))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        [out] = materialize([self])
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass(frozen=True, slots=True, eq=False)
class Drawn(Lazy):
    """Uniform(-bound, bound) float32, block k drawn by the generator seeded (seed, index, k):
    the values depend on the seed alone, not on which thread drew them or in what order."""

    shape: tuple[int, ...]
    bound: float
    seed: int
    index: int
    dtype: np.dtype = np.dtype(np.float32)

    def fill(self, k: int, out: np.ndarray) -> None:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(self.index, k))))
        rng.random(out=out, dtype=np.float32)
        out *= np.float32(2 * self.bound)
        out -= np.float32(self.bound)


@dataclass(frozen=True, slots=True, eq=False)
class Given(Lazy):
    """An array already in memory (a weights file's), served block by block, so that folding and
    casting it stream too rather than making whole float64 copies."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def fill(self, k: int, out: np.ndarray) -> None:
        out[...] = self.array.reshape(-1)[slice(*self.span(k))]


@dataclass(frozen=True, slots=True, eq=False)
class Cast(Lazy):
    base: Lazy
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    def fill(self, k: int, out: np.ndarray) -> None:
        out[...] = self.base.block(k)


@dataclass(frozen=True, slots=True, eq=False)
class Scaled(Lazy):
    """`base` times scale[i] along its first axis, computed in float64 and rounded once to `dtype`."""

    base: Lazy
    scale: np.ndarray
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    def astype(self, dtype) -> Lazy:
        return Scaled(self.base, self.scale, np.dtype(dtype))

    def fill(self, k: int, out: np.ndarray) -> None:
        if out.dtype == self.base.dtype:
            self.base.fill(k, out)
            source = out
        else:
            source = self.base.block(k)
        start, stop = self.span(k)
        if self.length % self.row == 0:  # whole rows
            rows = self.scale[start // self.row:stop // self.row, None]
            np.multiply(source.reshape(-1, self.row), rows, out=out.reshape(-1, self.row))  # float64 loop
            return
        first, last = start // self.row, (stop - 1) // self.row  # part of a row, or of two
        cut = min(stop, (first + 1) * self.row) - start
        np.multiply(source[:cut], self.scale[first], out=out[:cut])
        np.multiply(source[cut:], self.scale[last], out=out[cut:])


def scale_rows(weight: np.ndarray | Lazy, scale: np.ndarray) -> Lazy:
    """`weight` times scale[i] along its first axis, in float64: what folding a BN into a conv
    does to the kernel; computed block by block when it is written (or asked for whole)."""
    base = weight if isinstance(weight, Lazy) else Given(np.ascontiguousarray(weight))
    return Scaled(base, np.asarray(scale, np.float64), np.dtype(np.float64))


def stream(parts: list[bytes | memoryview | Lazy]) -> Iterator[bytes | memoryview]:
    """The bytes of `parts` one after another, each Lazy a block at a time, the blocks
    computed a few ahead in threads while the caller writes the ones before.

    A block's chunk is valid until the caller asks for the next chunk: its buffer is then
    filled again (a few reused buffers, not a fresh allocation per block, whose page faults
    would cost more than drawing the numbers). Write each chunk before taking the next."""
    lazies = [part for part in parts if isinstance(part, Lazy)]
    jobs = ((lazy, k) for lazy in lazies for k in range(lazy.nblocks))  # lazy: memory by blocks in flight
    room = max((np.dtype(lazy.dtype).itemsize * lazy.length for lazy in lazies), default=0)
    workers = _workers()
    free: list[np.ndarray] = []  # buffers already written out (touched by this thread only)

    def compute(lazy: Lazy, k: int, buffer: np.ndarray) -> np.ndarray:
        start, stop = lazy.span(k)
        out = buffer[:(stop - start) * np.dtype(lazy.dtype).itemsize].view(lazy.dtype)
        lazy.fill(k, out)
        return out

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: collections.deque = collections.deque()

        def submit() -> None:
            for lazy, k in itertools.islice(jobs, 1):
                buffer = free.pop() if free else np.empty(room, np.uint8)
                ahead.append((pool.submit(compute, lazy, k, buffer), buffer))

        for _ in range(2 * workers):
            submit()
        for part in parts:
            if not isinstance(part, Lazy):
                yield part
                continue
            for _ in range(part.nblocks):
                future, buffer = ahead.popleft()
                yield memoryview(future.result()).cast("B")
                free.append(buffer)
                submit()


def initial_values(graph: Graph, shapes: tuple[Shape, ...], seed: int = 0) -> dict[str, np.ndarray | Lazy]:
    """torchvision's initial variances, drawn uniform: convs Kaiming (variance 2 / fan_out,
    as torchvision's VGG and ResNet), FC variance 0.01 ** 2, biases 0, BN scale 1 shift 0,
    running mean 0 and variance 1, subsampling coefficient 1. Uniform(-b, b) with
    b = sqrt(3) * std has the same variance as torchvision's normal draw, like PyTorch's own
    default initialisers, and costs a quarter of the time to draw (the ONNX compile of VGG16
    is mostly drawing). The drawn tensors are Lazy: drawn when they are used or written."""
    values: dict[str, np.ndarray | Lazy] = {}
    for i, spec in enumerate(param_specs(graph, shapes)):
        match spec.role:
            case "weight":
                values[spec.key] = Drawn(spec.shape, math.sqrt(3 * 2.0 / spec.fan_out), seed, i)
            case "linear_weight":
                values[spec.key] = Drawn(spec.shape, math.sqrt(3) * 0.01, seed, i)
            case "bias" | "bn_bias" | "running_mean":
                values[spec.key] = np.zeros(spec.shape, np.float32)
            case "bn_weight" | "running_var" | "subsample_weight":
                values[spec.key] = np.ones(spec.shape, np.float32)
            case "num_batches_tracked":
                values[spec.key] = np.zeros(spec.shape, np.int64)
            case _:  # pragma: no cover
                raise AssertionError(spec.role)
    return values


def init_params(graph: Graph, shapes: tuple[Shape, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """`initial_values` drawn: every tensor an array."""
    values = initial_values(graph, shapes, seed)
    lazy = [key for key, value in values.items() if isinstance(value, Lazy)]
    return values | dict(zip(lazy, materialize([values[key] for key in lazy])))


def materialize(lazies: list[Lazy]) -> list[np.ndarray]:
    """Each Lazy computed whole, all blocks of all of them in parallel threads."""
    arrays = [np.empty(lazy.shape, lazy.dtype) for lazy in lazies]
    jobs = [(lazy, k, array.reshape(-1)) for lazy, array in zip(lazies, arrays) for k in range(lazy.nblocks)]

    def fill(job: tuple[Lazy, int, np.ndarray]) -> None:
        lazy, k, flat = job
        lazy.fill(k, flat[slice(*lazy.span(k))])

    if len(jobs) == 1:  # one small tensor: not worth the threads
        fill(jobs[0])
    else:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            list(pool.map(fill, jobs))
    return arrays


def _workers() -> int:
    return min(32, os.cpu_count() or 1)
