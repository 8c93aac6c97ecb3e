"""The structure of the generated PyTorch source: which groups of layers become classes.

A network's dotted node names form a tree of scopes (`conv2_x` > `0` > `conv1`). Each
scope becomes a *unit*:
  chain  a straight run of layers: `named(conv1=..., bn1=..., relu1=...)` (an nn.Sequential)
  seq    numbered copies fed one into the next: `nn.Sequential(Bottleneck(...), ...)`
  class  anything else, one nn.Module class per distinct structure, shared by every
         scope of that structure (ResNet's 16 blocks -> Bottleneck) with the values
         that differ (widths, strides, whether the shortcut projects) as arguments.

Values in a unit's template are `Slot`s into its list of `values`, so scopes of equal
structure have equal templates and differ only in their values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnndsl.backends.torch_names import plain
from cnndsl.backends.torch_ops import Layer, describe, shortcut_layer
from cnndsl.backends.torch_scopes import Opened, Scope, relative, scope_tree
from cnndsl.ir.graph import Graph, Node
from cnndsl.ir.joins import Shortcut
from cnndsl.ir.shape import Shape
from cnndsl.passes.memory import reads, relu_in_place

CHANNELS = {"in_channels", "out_channels", "num_features", "in_features", "out_features", "channels"}
_POSITIONAL = {"Conv": ("in_channels", "out_channels"), "ConvTranspose": ("in_channels", "out_channels"),
               "BatchNorm": ("num_features",), "Linear": ("in_features", "out_features"), "Dropout": ("p",),
               "LeakyReLU": ("negative_slope",), "LocalResponseNorm": ("size",), "Maxout": ("pieces",),
               "ZeroPadShortcut": ("stride", "out_channels"), "Subsample": ("channels", "kernel_size"),
               "PartialConv": ("table", "kernel_size"), "AdaptiveAvgPool": ("output_size",),
               "AdaptiveMaxPool": ("output_size",)}


@dataclass(frozen=True, slots=True)
class Slot:
    index: int


@dataclass(frozen=True, slots=True)
class Optional:
    """A shortcut that projects in some copies of a block and is the identity in others."""

    present: Slot
    layer: Layer


@dataclass(frozen=True, slots=True)
class ClassCall:
    """An instance of a generated class; `slots` hold its raw values in the caller's values."""

    key: tuple
    slots: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class Item:
    """One step of a class's forward: a layer (node) or a sub-unit, what it reads and makes."""

    attr: str
    apply: str  # torch_ops's applications, plus "unit", "optional" and "group" (an opened scope's container)
    template: object  # Layer | Optional | ClassCall | None, with Slots
    reads: tuple[int, ...]
    makes: tuple[int, ...]


@dataclass
class Unit:
    kind: str  # chain | seq | class
    key: tuple
    template: object
    values: list  # (value, role)
    scope: Scope
    items: tuple[Item, ...] = ()  # for classes


@dataclass
class Analysis:
    """Everything the renderer needs: the root unit and the class-kind units grouped by key."""

    graph: Graph
    shapes: tuple[Shape, ...]
    root: Unit
    classes: dict  # key -> list[Unit], in first-use order, innermost first


def analyse(graph: Graph, shapes: tuple[Shape, ...]) -> Analysis:
    """Split the graph into units and group equal class structures."""
    root = scope_tree(graph)
    inplace = relu_in_place(graph)
    classes: dict = {}
    unit = _unit(root, graph, shapes, inplace, classes, is_root=True)
    return Analysis(graph, shapes, unit, classes)


# -- units ---------------------------------------------------------------------------------

def _unit(scope: Scope, graph, shapes, inplace, classes, is_root=False) -> Unit:
    """The unit a scope becomes (the root always a class); class units are added to `classes`."""
    subs = {c: _unit(c, graph, shapes, inplace, classes) for c in scope.children if isinstance(c, Scope)}
    values: list = []
    if not is_root and _is_seq(scope):
        template = Layer("nn.Sequential", tuple(_embed(subs[c], values) for c in scope.children))
        return Unit("seq", ("seq", template), template, values, scope)
    steps = {c.id: describe(c, tuple(shapes[i] for i in c.inputs), shapes[c.id], c.id in inplace)
             for c in scope.children if isinstance(c, Node)}
    if not is_root and _is_chain(scope, steps):
        template = Layer("named", (), tuple((_name(c), _slots(steps[c.id].layer, values)) for c in scope.children))
        return Unit("chain", ("chain", template), template, values, scope)
    items = tuple(_item(c, scope, steps, subs, shapes, values) for c in scope.children)
    key = ("class", _localise(scope, items), len(scope.inputs))
    unit = Unit("class", key, ClassCall(key, tuple(Slot(i) for i in range(len(values)))), values, scope, items)
    classes.setdefault(key, []).append(unit)
    return unit


def _item(child, scope: Scope, steps: dict, subs: dict, shapes, values: list) -> Item:
    """The forward step of one child: a layer, a sub-unit, or an opened scope's container."""
    attr = relative(child, scope)
    if isinstance(child, Node):
        return _leaf_item(child, attr, steps[child.id], shapes, values)
    if isinstance(child, Opened):
        return Item(attr, "group", None, (), ())
    return Item(attr, "unit", _embed(subs[child], values), tuple(child.inputs), tuple(child.outputs))


def _name(node: Node) -> str:
    return node.name.split(".")[-1]


def _leaf_item(node: Node, attr: str, step, shapes, values: list) -> Item:
    op = node.op
    if isinstance(op, Shortcut) and op.mode in ("projection", "zero-pad"):
        ins = tuple(shapes[i] for i in node.inputs)
        rank = len(ins[0].spatial)
        present = _slot(not op.is_identity(ins), ("present", attr), values)
        layer = _slots(shortcut_layer(op, ins[0].channels, shapes[node.id].channels, rank), values)
        return Item(attr, "optional", Optional(present, layer), reads(node), (node.id,))
    template = _slots(step.layer, values) if step.layer is not None else None
    return Item(attr, step.apply, template, reads(node), (node.id,))


def _is_seq(scope: Scope) -> bool:
    kids = scope.children
    if not kids or not all(isinstance(c, Scope) and c.attr == str(i) for i, c in enumerate(kids)):
        return False
    if len(scope.inputs) != 1 or len(scope.outputs) != 1 or kids[-1].outputs != scope.outputs:
        return False
    feed = scope.inputs
    for c in kids:
        if c.inputs != feed or len(c.outputs) != 1:
            return False
        feed = c.outputs
    return True


def _is_chain(scope: Scope, steps: dict) -> bool:
    kids = scope.children
    if not kids or not all(isinstance(c, Node) and steps[c.id].apply == "call" for c in kids):
        return False
    if not all(plain(_name(c)) for c in kids):
        return False  # named(...) takes the names as keywords
    if any(isinstance(c.op, Shortcut) for c in kids):
        return False
    if len(scope.inputs) != 1 or scope.outputs != [kids[-1].id]:
        return False
    feed = tuple(scope.inputs)
    for c in kids:
        if tuple(c.inputs) != feed:
            return False
        feed = (c.id,)
    return True


def _localise(scope: Scope, items: list[Item]) -> tuple:
    """A class's structure with value ids replaced by positions, so equal structures compare equal."""
    where = {v: ("in", k) for k, v in enumerate(scope.inputs)}
    out = []
    for p, item in enumerate(items):
        refs = tuple(where.get(v, ("?", v)) for v in item.reads)
        out.append((item.attr, item.apply, item.template, refs))
        for k, v in enumerate(item.makes):
            where[v] = ("item", p, k)
    return tuple(out), tuple(where[v] for v in scope.outputs)


def _embed(sub: Unit, values: list) -> object:
    """A sub-unit's template in the caller's values."""
    offset = len(values)
    values.extend(sub.values)
    if sub.kind == "class":
        return ClassCall(sub.key, tuple(Slot(offset + i) for i in range(len(sub.values))))
    return _shift(sub.template, offset)


def _shift(t, offset: int):
    match t:
        case Slot():
            return Slot(t.index + offset)
        case Layer():
            return Layer(t.cls, tuple(_shift(a, offset) for a in t.args),
                         tuple((k, _shift(v, offset)) for k, v in t.kwargs))
        case ClassCall():
            return replace(t, slots=tuple(_shift(s, offset) for s in t.slots))
        case Optional():
            return Optional(_shift(t.present, offset), _shift(t.layer, offset))
    return t


def _slot(value, role, values: list) -> Slot:
    values.append((value, role))
    return Slot(len(values) - 1)


def _slots(layer: Layer, values: list) -> Layer:
    """The layer with every value replaced by a Slot (its role: the argument's name)."""
    family = layer.cls.split(".")[-1].rstrip("d123") if layer.cls.startswith("nn.") else layer.cls
    family = family if family in _POSITIONAL else layer.cls.split(".")[-1]
    names = _POSITIONAL.get(family, ())
    args = tuple(_slots(a, values) if isinstance(a, Layer) else
                 _slot(a, names[i] if i < len(names) else f"arg{i}", values) for i, a in enumerate(layer.args))
    kwargs = tuple((k, _slot(v, k, values)) for k, v in layer.kwargs)
    return Layer(layer.cls, args, kwargs)
