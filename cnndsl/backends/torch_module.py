"""The IR as a live `nn.Module`: one submodule per layer at the node's dotted name
(`conv2_x.0.conv1`), parameters registered in structural order and initialised from
the numpy initialiser shared with the ONNX backend, so a seed gives the same weights
in both. The module runs the graph node by node, freeing each value after its last use.

    >>> net = cnndsl.load("architectures/resnet50.arch").to_torch(seed=0)
    >>> load_by_order(net, torchvision.models.resnet50().state_dict())
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from cnndsl.backends import torch_layers
from cnndsl.backends.params import init_params
from cnndsl.backends.torch_names import check_layer_names
from cnndsl.backends.torch_ops import Layer, describe
from cnndsl.ir.graph import Graph
from cnndsl.ir.shape import Shape
from cnndsl.passes.memory import reads as node_reads, relu_in_place

__all__ = ["CompiledNetwork", "Group", "build_layer", "load_by_order", "to_module"]


def to_module(network, seed: int = 0) -> "CompiledNetwork":
    """The network (a cnndsl.Network) as an nn.Module on the CPU, holding the shared
    initialiser's weights for `seed` (the same as the ONNX backend's for that seed)."""
    check_layer_names(network.graph)
    module = CompiledNetwork(network.graph, network.shapes, allocate=False)
    values = init_params(network.graph, network.shapes, seed)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()}, strict=True, assign=True)
    return module


def build_layer(layer: Layer, allocate: bool = True) -> nn.Module:
    """Construct the module a Layer describes. allocate=False: torch.nn's layers get no
    storage (meta tensors) and must be filled by `load_state_dict(..., assign=True)`;
    cnndsl's own layers, which hold non-persistent buffers, are always built."""
    if not layer.cls.startswith("nn."):
        return getattr(torch_layers, layer.cls)(*layer.args, **dict(layer.kwargs))
    args = [build_layer(a, allocate) if isinstance(a, Layer) else a for a in layer.args]
    with contextlib.nullcontext() if allocate else torch.device("meta"):
        return getattr(nn, layer.cls[3:])(*args, **dict(layer.kwargs))


@dataclass(frozen=True, slots=True)
class _Planned:
    """How forward runs one node: the module at `path` (None: no module) applied as `apply`
    to the values of `reads`; `frees`: the values no later node reads."""

    node: int
    apply: str
    path: tuple[str, ...] | None
    reads: tuple[int, ...]
    frees: tuple[int, ...]


class Group(nn.Module):
    """A named group of layers in the .arch file (a block use, a residual group, a branch)."""


class CompiledNetwork(nn.Module):
    """A cnndsl network; `forward(x)` returns the output node's value, `outputs(x)` every node's."""

    def __init__(self, graph: Graph, shapes: tuple[Shape, ...], allocate: bool = True) -> None:
        """allocate=False: leave torch.nn layers without storage, for load_state_dict(assign=True)."""
        super().__init__()
        self.network_name = graph.name
        inplace = relu_in_place(graph)  # the memory model assumes the same in-place ReLUs
        last_use: dict[int, int] = {}
        for node in graph.nodes:
            for i in node_reads(node):
                last_use[i] = node.id
        plan = []
        for node in graph.nodes:
            step = describe(node, tuple(shapes[i] for i in node.inputs), shapes[node.id], node.id in inplace)
            path = tuple(node.name.split("."))
            if step.layer is not None:
                _attach(self, path, build_layer(step.layer, allocate))
            reads = node_reads(node)
            frees = tuple(i for i in dict.fromkeys(reads) if last_use[i] == node.id and i != graph.output)
            plan.append(_Planned(node.id, step.apply, path if step.layer else None, reads, frees))
        self._plan = tuple(plan)
        self._output = graph.output
        # the values an in-place ReLU overwrites: `outputs` keeps a copy of them
        self._overwritten = frozenset(graph.nodes[i].inputs[0] for i in inplace)

    def extra_repr(self) -> str:
        return f"network={self.network_name!r}"

    def forward(self, x: torch.Tensor, visit: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The output node's value. `visit(node_id, value)`, if given, sees every node's
        output as soon as it is computed (a later in-place ReLU may overwrite it)."""
        values: dict[int, torch.Tensor] = {}
        for step in self._plan:
            y = _apply(step.apply, self._module(step.path) if step.path else None, [values[i] for i in step.reads], x)
            values[step.node] = y
            if visit is not None:
                visit(step.node, y)
            for i in step.frees:
                del values[i]
        return values[self._output]

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every node's output, indexed by node id (a copy where an in-place ReLU overwrites it)."""
        record: list[torch.Tensor] = []
        self(x, lambda i, y: record.append(y.clone() if i in self._overwritten else y))
        return record

    def _module(self, path: tuple[str, ...]) -> nn.Module:
        m: nn.Module = self
        for part in path:
            m = m._modules[part]
        return m


def _apply(apply: str, module: nn.Module | None, args: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    match apply:
        case "input":
            return x
        case "call":
            return module(args[0])
        case "call_flat":
            return module(torch.flatten(args[0], 1))
        case "call_vec":
            return module(args[0].unsqueeze(-1)).squeeze(-1)
        case "same":
            return args[0]
        case "flatten":
            return torch.flatten(args[0], 1)
        case "add":
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        case "cat":
            return torch.cat(args, 1)
        case "crop":
            return torch_layers.center_crop(args[0], args[1])
        case "pad":
            return torch_layers.zero_pad(args[0], args[1])
    raise ValueError(f"unknown application {apply!r}")  # pragma: no cover


def _attach(root: nn.Module, path: tuple[str, ...], module: nn.Module) -> None:
    """Register `module` at the dotted path, creating Group containers on the way."""
    parent = root
    for i, part in enumerate(path):
        if hasattr(parent, part) and part not in parent._modules:
            raise ValueError(f"layer name {'.'.join(path)!r}: {part!r} is reserved in PyTorch modules; rename it")
        if i == len(path) - 1:
            if part in parent._modules:
                raise ValueError(f"layer name {'.'.join(path)!r} is used twice")
            parent.add_module(part, module)
        else:
            if part not in parent._modules:
                parent.add_module(part, Group())
            parent = parent._modules[part]
            if not isinstance(parent, Group):
                raise ValueError(f"layer name {'.'.join(path)!r}: {'.'.join(path[:i + 1])!r} is a layer, not a group")


def load_by_order(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the tensors of another model of the same architecture into `module` by position:
    the i-th entry of `state_dict` (parameters and buffers, e.g. BN running statistics, in
    its registration order) goes to the i-th entry of `module.state_dict()`, whatever the
    names. torchvision registers main path before shortcut and branches left to right, as
    cnndsl does, so `load_by_order(net, torchvision.models.resnet50().state_dict())` works.

    Raises ValueError naming the first mismatch (index, our key and shape, theirs), or
    the first surplus entry when the counts differ; nothing is loaded then.
    """
    ours, theirs = list(module.state_dict().items()), list(state_dict.items())
    for i, ((key, mine), (other, value)) in enumerate(zip(ours, theirs)):
        if tuple(mine.shape) != tuple(value.shape):
            raise ValueError(f"entry {i} differs: ours {key!r} has shape {tuple(mine.shape)}, "
                             f"theirs {other!r} has shape {tuple(value.shape)}")
    if len(ours) != len(theirs):
        longer, name = (ours, "ours") if len(ours) > len(theirs) else (theirs, "theirs")
        key, value = longer[min(len(ours), len(theirs))]
        raise ValueError(f"{len(ours)} entries in ours, {len(theirs)} in theirs: entry {min(len(ours), len(theirs))} "
                         f"({name}) {key!r} with shape {tuple(value.shape)} has no counterpart")
    module.load_state_dict({key: value for (key, _), (_, value) in zip(ours, theirs)}, strict=True)
