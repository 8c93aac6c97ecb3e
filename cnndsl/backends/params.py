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

import math
import os
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


CHUNK = 1 << 22  # elements drawn by one generator: the unit of work shared out to threads


def init_params(graph: Graph, shapes: tuple[Shape, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision-like initial values: convs Kaiming-normal (fan_out, ReLU gain), FC
    normal(0, 0.01), biases 0, BN scale 1 shift 0, running mean 0 and variance 1,
    subsampling coefficient 1.

    Each block of CHUNK elements of tensor i is drawn from its own generator, seeded by
    (seed, i, block): the values depend on the seed alone, not on how many threads drew
    them, and numpy draws outside the GIL, so the blocks are drawn in parallel."""
    values: dict[str, np.ndarray] = {}
    jobs = []
    for i, spec in enumerate(param_specs(graph, shapes)):
        values[spec.key], std = _initial(spec)
        if std is not None:
            flat = values[spec.key].reshape(-1)
            jobs += [(flat[c:c + CHUNK], std, (i, c // CHUNK)) for c in range(0, flat.size, CHUNK)]
    with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _draw(seed, *job), jobs))
    return values


def _initial(spec: ParamSpec) -> tuple[np.ndarray, float | None]:
    """The tensor (constants filled in) and the std of its normal draw, if it is drawn."""
    match spec.role:
        case "weight":
            return np.empty(spec.shape, np.float32), math.sqrt(2.0 / spec.fan_out)
        case "linear_weight":
            return np.empty(spec.shape, np.float32), 0.01
        case "bias" | "bn_bias" | "running_mean":
            return np.zeros(spec.shape, np.float32), None
        case "bn_weight" | "running_var" | "subsample_weight":
            return np.ones(spec.shape, np.float32), None
        case "num_batches_tracked":
            return np.zeros(spec.shape, np.int64), None
    raise AssertionError(spec.role)  # pragma: no cover


def _draw(seed: int, out: np.ndarray, std: float, key: tuple[int, int]) -> None:
    """Fill `out` (a view) with float32 normal(0, std) from the generator of `key`, in place."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))
    rng.standard_normal(out=out, dtype=np.float32)
    out *= np.float32(std)
