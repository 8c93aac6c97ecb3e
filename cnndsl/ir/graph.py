"""The IR graph: nodes in topological (source) order, each an op with its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cnndsl.ir.joins import Add, Concat, PartialConv, Resize, Shortcut, Subsample
from cnndsl.ir.ops import (LRN, Activation, BatchNorm, Conv, Dropout, Flatten, GlobalPool, Input, Linear, Maxout,
                           Pool)
from cnndsl.source import Span

Op = Union[Input, Conv, Pool, GlobalPool, Linear, Flatten, Dropout, BatchNorm, LRN, Activation, Maxout,
           Add, Concat, Resize, Shortcut, PartialConv, Subsample]


WEIGHTED = (Conv, Linear, PartialConv)  # layers that mix channels through a weight matrix


def is_weighted(op: Op) -> bool:
    """A conv (full, partial or transposed) or FC layer: the layers a table counts as `conv`.
    BN and LeNet's subsampling hold weights too, but one scale a map; they mix nothing."""
    return isinstance(op, WEIGHTED)


def takes_activation(op: Op) -> bool:
    """Whether the `activation` policy follows this layer: every weighted layer but a
    transposed conv (U-Net's up-convolutions have none)."""
    return is_weighted(op) and not getattr(op, "transposed", False)


@dataclass(frozen=True, slots=True)
class Node:
    """One op applied to the outputs of earlier nodes.

    name:     unique dotted path, e.g. `conv2_x.0.conv1` (backends derive their names from it)
    span:     the source line that made it
    scope:    enclosing labelled groups and block uses, outermost first, e.g. ("conv2_x", "0")
    implicit: made by a rule or the activation policy rather than written on its line
    trace:    the block uses that led here, outermost first (for diagnostics)
    """

    id: int
    op: Op
    inputs: tuple[int, ...]
    name: str
    span: Span
    scope: tuple[str, ...] = ()
    implicit: bool = False
    trace: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class Graph:
    """A whole network: `nodes[i].id == i`, inputs always point backwards."""

    name: str
    nodes: tuple[Node, ...]
    output: int
    input_flag: Span | None = None  # `--input` when it set the input size: errors it causes point there

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def consumers(self) -> dict[int, list[int]]:
        """For each node id, the ids of the nodes that read it."""
        users: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.id)
        return users
