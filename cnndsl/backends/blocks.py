"""Tensors computed a block at a time: the weights a writer streams without holding them whole.

A `Lazy` tensor is split into blocks of whole rows (about BLOCK elements; a row longer than
BLOCK is cut). `stream` writes tensors a block at a time, computing a few blocks ahead in
threads into a few reused buffers, so its memory is a few blocks, whatever the weights'
size; `materialize` computes tensors whole, all their blocks in parallel. numpy only.
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
class Filled(Lazy):
    """A constant tensor (biases 0, batch norm's scale 1): a huge one costs a block, not its size."""

    shape: tuple[int, ...]
    value: float
    dtype: np.dtype = np.dtype(np.float32)

    def fill(self, k: int, out: np.ndarray) -> None:
        out.fill(self.value)


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
