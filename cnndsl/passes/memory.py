"""A model of the memory PyTorch's eager mode allocates to run a network: the peak of an
inference pass, and of one training step (forward, backward, optimizer step).

It replays the graph as the compiled PyTorch module runs it: each op allocates its output
(ReLU overwrites its input where it can, views and identities allocate nothing), a tensor is
freed after its last reader, and in training autograd keeps what each op's backward reads
(PyTorch's derivatives.yaml): conv, BN, linear and pools keep their input, max pool also its
int64 indices, ReLU/tanh/sigmoid/softmax their output, dropout its mask. Backward runs the
nodes in reverse, allocating input gradients and, once, each parameter's gradient, and
freeing saved tensors as it passes them. The optimizer step then makes, with weight decay, a
temporary copy of the gradients (and Adam one more temporary, freed in between).

A training step is predicted in the steady state, the second step and every one after it,
which is where a training loop spends its time: the optimizer's state (momentum: one copy of
the parameters; Adam: two), made by the first step, is held through the whole step, forward
and backward included; the gradients are freed between steps (zero_grad(set_to_none=True),
PyTorch's default). The first step peaks lower, since its state only appears at its end.

Not modelled: cuDNN/cuBLAS workspaces (algorithm-dependent), the allocator's rounding and
fragmentation, and the CUDA context. Figures are bytes above nothing: weights included.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.ir.graph import Graph
from cnndsl.ir.joins import Add, Concat, PartialConv, Resize, Shortcut, Subsample
from cnndsl.ir.ops import (
    LRN,
    Activation,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalPool,
    Input,
    Linear,
    Maxout,
    Pool,
)
from cnndsl.passes.counts import Counts, total

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
OPTIMIZER_COPIES = {"sgd": 0, "sgd-momentum": 1, "adam": 2}
_FRESH = (Conv, BatchNorm, Linear, Add, Concat, Pool, GlobalPool, PartialConv, Subsample)


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Predicted peak bytes, and what it is made of at that moment."""

    peak: int
    weights: int
    activations: int  # live or saved activation bytes at the peak
    gradients: int
    optimizer_state: int
    phase: str  # where the peak falls: forward | backward | step


def reads(node) -> tuple[int, ...]:
    """The tensors a node reads when the PyTorch module runs: all its inputs, except that a
    residual shortcut's second input (the block's output) only gives a shape."""
    return node.inputs[:1] if isinstance(node.op, Shortcut) else node.inputs


def relu_in_place(graph: Graph) -> frozenset[int]:
    """The ReLUs that may overwrite their input: a fresh tensor that nothing else reads and
    that is not the network's output. The PyTorch backend uses the same rule."""
    readers: dict[int, int] = {}
    for node in graph.nodes:
        for i in reads(node):
            readers[i] = readers.get(i, 0) + 1
    return frozenset(n.id for n in graph.nodes
                     if isinstance(n.op, Activation) and n.op.fn == "relu"
                     and _fresh(graph.nodes[n.inputs[0]])
                     and readers[n.inputs[0]] == 1 and n.inputs[0] != graph.output)


def _fresh(node) -> bool:
    """The node's output is a new tensor. A one-input add is its input itself (the PyTorch
    module returns it unchanged), so a ReLU after it must not run in place."""
    return isinstance(node.op, _FRESH) and not _passes_through(node)


def _passes_through(node) -> bool:
    return isinstance(node.op, Add) and len(node.inputs) == 1


def _identity(graph: Graph, shapes, node_id: int) -> bool:
    """A shortcut that passes its input through unchanged."""
    node = graph.nodes[node_id]
    return isinstance(node.op, Shortcut) and node.op.is_identity((shapes[node.inputs[0]], shapes[node.inputs[1]]))


def _alias(graph: Graph, shapes, inplace: frozenset[int], training: bool) -> list[int]:
    """For each node, the node whose storage its output is (itself when it allocates)."""
    owner: list[int] = []
    for node in graph.nodes:
        op = node.op
        same = (node.id in inplace or isinstance(op, Flatten) or (isinstance(op, Dropout) and not training)
                or _identity(graph, shapes, node.id) or _passes_through(node))
        owner.append(owner[node.inputs[0]] if same else node.id)
    return owner


def _projections(graph: Graph, shapes) -> frozenset[int]:
    """The shortcuts that are a 1x1 conv + BN (not the identity, not zero-padding)."""
    return frozenset(n.id for n in graph.nodes if isinstance(n.op, Shortcut) and n.op.mode == "projection"
                     and not _identity(graph, shapes, n.id))


def estimate(graph: Graph, shapes, counts: tuple[Counts, ...], batch: int = 1, dtype: str = "fp32",
             training: bool = False, optimizer: str = "sgd-momentum", weight_decay: bool = True) -> MemoryEstimate:
    """Peak bytes of an inference pass (`training=False`, under no_grad) or of one training step."""
    return _Replay(graph, shapes, counts, batch, DTYPE_BYTES[dtype], training, optimizer, weight_decay).run()


class _Replay:
    """Replays allocations and frees in execution order, tracking the peak."""

    def __init__(self, graph, shapes, counts, batch, nbytes, training, optimizer, weight_decay):
        self.g, self.shapes, self.counts, self.batch, self.nbytes = graph, shapes, counts, batch, nbytes
        self.training, self.optimizer, self.weight_decay = training, optimizer, weight_decay
        self.projections = _projections(graph, shapes)
        params = total(counts).params
        buffers = sum(2 * shapes[n.inputs[0]].channels for n in graph.nodes if isinstance(n.op, BatchNorm))
        buffers += sum(2 * shapes[i].channels for i in self.projections)
        self.param_bytes = params * nbytes
        self.weights = (params + buffers) * nbytes
        self.owner = _alias(graph, shapes, relu_in_place(graph), training)
        self.live: dict[object, int] = {}
        self.now = 0  # sum of self.live, kept as it changes
        self.peak, self.peak_state = 0, None

    def size(self, node_id: int) -> int:
        return self.shapes[node_id].numel * self.batch * self.nbytes

    def alloc(self, key, nbytes: int, phase: str) -> None:
        self.live[key] = self.live.get(key, 0) + nbytes
        self.now += nbytes
        self.observe(phase)

    def free(self, key) -> None:
        self.now -= self.live.pop(key, 0)

    def observe(self, phase: str) -> None:
        now = self.now
        if now > self.peak:
            self.peak = now
            grads = self.live.get("grads", 0)
            state = self.live.get("optimizer", 0)
            acts = now - self.live.get("weights", 0) - grads - state - self.live.get("temp", 0)
            self.peak_state = (acts, grads, state, phase)

    def run(self) -> MemoryEstimate:
        self.alloc("weights", self.weights, "forward")
        copies = OPTIMIZER_COPIES[self.optimizer] if self.training else 0
        if copies:  # the steady state: the state the first step made is held from the start
            self.alloc("optimizer", copies * self.param_bytes, "forward")
        self.forward()
        if self.training:
            self.backward()
            self.step()
        acts, grads, state, phase = self.peak_state
        return MemoryEstimate(self.peak, self.weights, acts, grads, state, phase)

    # -- forward -------------------------------------------------------------------------

    def forward(self) -> None:
        g = self.g
        last_read = {}
        for node in g.nodes:
            for i in reads(node):
                last_read[self.owner[i]] = node.id
        saved: set[object] = set()  # kept for backward: never freed in the forward pass
        for node in g.nodes:
            key = self.owner[node.id]
            if key not in self.live:
                self.alloc(key, self.size(node.id), "forward")
            for extra, nbytes in self._forward_temps(node):
                self.alloc(extra, nbytes, "forward")
            if self.training:
                for k, nbytes in self._saves(node):
                    saved.add(k)
                    if k not in self.live:  # a tensor only backward needs: indices, a mask
                        self.alloc(k, nbytes, "forward")
            for i in reads(node):
                k = self.owner[i]
                if last_read.get(k) == node.id and k not in saved and k != self.owner[g.output]:
                    self.free(k)
            for extra, _ in self._forward_temps(node):
                if extra not in saved:
                    self.free(extra)

    def _forward_temps(self, node) -> list[tuple[object, int]]:
        """Tensors an op makes besides its output: a projection shortcut's conv output."""
        if node.id in self.projections:
            return [(("proj", node.id), self.size(node.id))]
        return []

    def _saves(self, node) -> list[tuple[object, int]]:
        """What autograd keeps for this node's backward (keys name the storage)."""
        op = node.op
        x = node.inputs[0] if node.inputs else None
        inp = [(self.owner[x], self.size(x))] if x is not None else []
        match op:
            case Conv() | Linear() | BatchNorm() | PartialConv() | GlobalPool() | Subsample() | LRN():
                return inp
            case Pool(mode="max"):
                return inp + [(("indices", node.id), self.shapes[node.id].numel * self.batch * 8)]
            case Pool():
                return inp
            case Activation(fn="relu" | "tanh" | "sigmoid" | "softmax" | "elu"):
                return [(self.owner[node.id], self.size(node.id))]
            case Activation():
                return inp
            case Dropout():
                return [(("mask", node.id), self.shapes[node.id].numel * self.batch)]
            case Maxout():
                return [(("indices", node.id), self.shapes[node.id].numel * self.batch * 8)]
            case Shortcut() if node.id in self.projections:
                return inp + [(("proj", node.id), self.size(node.id))]
            case Input() | Flatten() | Add() | Concat() | Resize() | Shortcut():
                return []
        raise AssertionError(op)  # pragma: no cover

    # -- backward and step ---------------------------------------------------------------

    def backward(self) -> None:
        g = self.g
        out = g.output
        self.alloc(("grad", out), self.size(out), "backward")  # d loss / d output
        readers_left: dict[object, int] = {}
        for node in g.nodes:
            for key, _ in self._saves(node):
                readers_left[key] = readers_left.get(key, 0) + 1
        for node in reversed(g.nodes):
            if ("grad", node.id) not in self.live:
                continue
            for i in reads(node):
                if not isinstance(g.nodes[i].op, Input):
                    self.alloc(("grad", i), self.size(i), "backward")
            if self.counts[node.id].params:
                self.alloc("grads", self.counts[node.id].params * self.nbytes, "backward")
            self.free(("grad", node.id))
            for key, _ in self._saves(node):
                readers_left[key] -= 1
                if readers_left[key] <= 0:
                    self.free(key)

    def step(self) -> None:
        for key in [k for k in self.live if k not in ("weights", "grads", "optimizer")]:
            self.free(key)
        if self.weight_decay or self.optimizer == "adam":  # foreach: grads + wd * params, a new list;
            self.alloc("temp", self.param_bytes, "step")  # Adam's sqrt(v) comes after that one is freed
