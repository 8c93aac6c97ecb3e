"""The tree of scopes the generated source's classes follow, from the nodes' dotted names.

`conv2_x.0.conv1` lies in scope `conv2_x` > `0`. A scope becomes one call in its parent's
forward, so it must be computable in one go: every value it reads must exist before it
starts. Names do not promise that: two one-branch `concat { relu }` in a row both name
their branch `branch1`, and scope `branch1` then reads the first concat's output, which
reads `branch1` itself. Such a scope is *opened*: it stays a container (`nn.Module()` at
its name, so the state-dict keys do not change) and its layers are called from the
parent, one by one, in node order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnndsl.ir.graph import Graph, Node
from cnndsl.passes.memory import reads


@dataclass(eq=False)
class Scope:
    path: tuple[str, ...]
    children: list = field(default_factory=list)  # Node | Scope | Opened, in node order
    ids: set = field(default_factory=set)
    inputs: list = field(default_factory=list)  # values read from outside, in first-read order
    outputs: list = field(default_factory=list)  # values read outside (or the network's output)

    @property
    def attr(self) -> str:
        return self.path[-1]


@dataclass(frozen=True, eq=False)
class Opened:
    """Where an opened scope stood: its container is registered here, its layers follow."""

    scope: Scope


def scope_tree(graph: Graph) -> Scope:
    """The root scope, its interfaces computed and every scope that cannot run in one go opened."""
    root = _tree(graph)
    users: dict[int, list[int]] = {}
    for node in graph.nodes:
        for i in reads(node):
            users.setdefault(i, []).append(node.id)
    _interface(root, graph, users)
    _open(root)
    return root


def relative(child, parent: Scope) -> str:
    """The child's attribute path inside `parent` (dotted when the child is in an opened scope)."""
    path = child.scope.path if isinstance(child, Opened) else \
        child.path if isinstance(child, Scope) else tuple(child.name.split("."))
    return ".".join(path[len(parent.path):])


def _tree(graph: Graph) -> Scope:
    root = Scope(())
    scopes = {(): root}
    leaves = set()
    for node in graph.nodes:
        parts = tuple(node.name.split("."))
        for depth in range(1, len(parts)):
            path = parts[:depth]
            if path not in scopes:
                scopes[path] = Scope(path)
                scopes[path[:-1]].children.append(scopes[path])
            scopes[path].ids.add(node.id)
        if parts in scopes or parts in leaves or any(parts[:d] in leaves for d in range(1, len(parts))):
            raise ValueError(f"layer name {node.name!r} is used twice (as a layer and as a group)")
        leaves.add(parts)
        root.ids.add(node.id)
        scopes[parts[:-1]].children.append(node)
    return root


def _interface(scope: Scope, graph: Graph, users: dict) -> None:
    for node_id in sorted(scope.ids):
        for i in reads(graph.nodes[node_id]):
            if i not in scope.ids and i not in scope.inputs:
                scope.inputs.append(i)
        outside = any(u not in scope.ids for u in users.get(node_id, ()))
        if outside or node_id == graph.output:
            scope.outputs.append(node_id)
    for child in scope.children:
        if isinstance(child, Scope):
            _interface(child, graph, users)


def _open(scope: Scope) -> None:
    """Open, one at a time, the first child scope that reads a value not yet made when it
    starts; then do the same inside the children that stay closed."""
    while (late := _first_late(scope)) is not None:
        k = scope.children.index(late)
        scope.children[k:k + 1] = [Opened(late), *late.children]
        scope.children.sort(key=_start)
    for child in scope.children:
        if isinstance(child, Scope):
            _open(child)


def _first_late(scope: Scope) -> Scope | None:
    made = set(scope.inputs)
    for child in scope.children:
        if isinstance(child, Node):
            made.add(child.id)
        elif isinstance(child, Scope):
            if not made.issuperset(child.inputs):
                return child
            made.update(child.outputs)
    return None


def _start(child) -> float:
    """Where a child starts in node order (an Opened marker just before its first layer)."""
    if isinstance(child, Node):
        return child.id
    return min(child.scope.ids) - 0.5 if isinstance(child, Opened) else min(child.ids)
