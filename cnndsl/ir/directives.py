"""Network-level lines: `network NAME`, `input HxWxC`, `activation relu`, `shortcut
projection|zero-pad`, `residual stride on 3x3|first`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import BuildError, Env, integer
from cnndsl.ir.graph import Node, is_weighted
from cnndsl.ir.layers import lookup
from cnndsl.ir.ops import Activation
from cnndsl.ir.options import Options
from cnndsl.ir.shape import MAX_DIM, Shape
from cnndsl.source import Source, Span
from cnndsl.syntax import ast

DIRECTIVES = ("network", "input", "activation", "shortcut", "residual")


@dataclass
class Settings:
    """Network-level directives."""

    name: str = "Network"
    input: Shape | None = None
    input_span: Span | None = None
    activation: tuple[str, float | None] | None = None
    rules: dict[str, tuple[tuple[object, str], ...]] = field(default_factory=dict)  # "conv"/"fc": (op, kind name) steps
    shortcut: str = "projection"
    stride_on: str = "3x3"  # or "first"
    seen: dict[str, Span] = field(default_factory=dict)  # where each directive was first given


def directive(line: ast.Line) -> bool:
    unit = line.unit
    return isinstance(unit, ast.Head) and unit.size is None and unit.words[0] in DIRECTIVES and line.label is None


def apply_directive(line: ast.Line, settings, env: Env) -> None:
    head: ast.Head = line.unit
    word, rest = head.words[0], head.words[1:]
    first = settings.seen.setdefault(word, head.span)
    if first is not head.span:  # directives are read before any layer, so a second one would silently win
        raise BuildError(head.span, f"`{word}` is given twice", Note(f"first given here; keep one `{word}` line", first))
    if word == "network":
        if len(rest) != 1 or line.options or head.arg is not None:
            raise BuildError(head.span, "write the network's name as one word: `network VGG16`")
        settings.name = rest[0]
    elif word == "input":
        settings.input, settings.input_span = input_shape(head, env), head.span
    elif word == "activation":
        _activation(head, settings, env)
    elif word == "shortcut":
        if rest not in (("projection",), ("zero-pad",)):
            raise BuildError(head.span, "shortcut must be `shortcut projection` (option B) or `shortcut zero-pad` (option A)")
        settings.shortcut = rest[0]
    elif word == "residual":
        on = "3x3" if rest == ("stride", "on") and isinstance(head.arg, ast.SizeLit) else \
            "first" if rest == ("stride", "on", "first") else None
        if on is None:
            raise BuildError(head.span, "write `residual stride on 3x3` (torchvision) or `residual stride on first` (the paper)")
        settings.stride_on = on


def _activation(head: ast.Head, settings, env: Env) -> None:
    words = head.words[1:]
    if words == ("none",):
        settings.activation = None
        return
    op = lookup(words, head.span)(ast.Head(None, words, head.arg, head.span), Options((), env), {})[0][0]
    if not isinstance(op, Activation) or op.fn == "softmax":
        raise BuildError(head.span, f"`activation` takes relu, leaky relu, elu, tanh or sigmoid, not '{' '.join(words)}'")
    settings.activation = (op.fn, op.alpha)


def input_shape(head: ast.Head, env: Env) -> Shape:
    """`input 224x224x3` (HxWxC), `input 56x300` (1D: length x channels), `input 16x112x112x3`, `input 784`."""
    arg = head.arg
    if arg is None or len(head.words) != 1:
        raise BuildError(head.span, "write the input size as HxWxC, e.g. `input 224x224x3`")
    dims = arg.dims if isinstance(arg, ast.SizeLit) else (integer(arg, env, "input size"),)
    if len(dims) > 4:
        raise BuildError(arg.span, f"input has {len(dims)} dimensions; at most 4 (DxHxWxC)")
    for d in dims:
        if d < 1:
            raise BuildError(arg.span, f"input sizes must be at least 1, got {d}")
        if d > MAX_DIM:
            raise BuildError(arg.span, f"input size {d:,} is absurd (at most {MAX_DIM:,})")
    return Shape(dims[-1], tuple(dims[:-1]))


def input_span(settings: Settings, override: Shape | None, module: ast.Module) -> tuple[Span, Span | None]:
    """Where the input node was written (the file's `input` line, else line 1), and the
    `--input` flag's span when it sets the size (a source of its own: errors blame the flag)."""
    if override is None and settings.input is None:  # point at the first layer, which has nothing to read
        first = [st.span for st in module.statements if isinstance(st, ast.Line) and not directive(st)]
        raise BuildError(first[0] if first else Span(module.source, 1, 1, 1, 2), "no input size",
                         Note("add a line such as `input 224x224x3` (HxWxC) before the first layer"))
    written = settings.input_span or Span(module.source, 1, 1, 1, 2)
    if override is None:
        return written, None
    text = override.text()
    flag = Span(Source("--input", text), 1, 1, 1, len(text) + 1)
    given = settings.input
    if given is not None and len(given.spatial) != len(override.spatial):
        raise BuildError(flag, f"--input {text} is {len(override.spatial)}D, but this network's input is "
                         f"{len(given.spatial)}D ({given.text()})", Note("the file's input size, here", settings.input_span),
                         Note(f"give --input as {_pattern(len(given.spatial))}"))
    return written, flag


def _pattern(rank: int) -> str:
    return ("C", "LxC (1D)", "HxWxC (2D)", "DxHxWxC (3D)")[rank] if rank < 4 else "?"


def drop_last_policy_activation(nodes: list[Node]) -> list[Node]:
    """The policy puts its activation after every conv and FC but the last one (the classifier)."""
    weighted = [n for n in nodes if is_weighted(n.op)]
    if not weighted:
        return nodes
    last = weighted[-1]
    victims = [n for n in nodes if n.implicit and isinstance(n.op, Activation) and n.inputs == (last.id,)]
    if not victims:
        return nodes
    drop = victims[0].id
    remap = {n.id: n.id - (n.id > drop) for n in nodes}
    remap[drop] = last.id
    return [replace(n, id=remap[n.id], inputs=tuple(remap[i] if i != drop else last.id for i in n.inputs))
            for n in nodes if n.id != drop]
