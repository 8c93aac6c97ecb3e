"""Text for the generated PyTorch source: constructor expressions and class arguments
(forward's text: cnndsl.backends.torch_forward).

`Params` decides a class's arguments: a value that differs between the class's
instances becomes an argument (equal columns share one), named after its role:
in_channels / out_channels when it is the block's input / output width, width (width1,
width2, ...) for other channel counts, stride, or the shortcut's name for whether it
projects.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from cnndsl.backends.torch_names import plain
from cnndsl.backends.torch_ops import Layer
from cnndsl.backends.torch_units import CHANNELS, ClassCall, Slot, Unit

WIDTH = 90  # an expression longer than this is broken over lines, one argument a line
RESERVED = {"self", "torch", "nn", "named", "center_crop", "zero_pad", "super"}
_CONV = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True, "output_padding": 0}
_POOL = {"padding": 0, "ceil_mode": False}
DEFAULTS = {"Conv": _CONV, "ConvTranspose": _CONV, "MaxPool": _POOL, "AvgPool": _POOL,
            "BatchNorm": {"eps": 1e-5, "momentum": 0.1}, "Linear": {"bias": True}, "ReLU": {"inplace": False},
            "ELU": {"alpha": 1.0}, "LocalResponseNorm": {"alpha": 1e-4, "beta": 0.75, "k": 1.0}}
_ARG_DEFAULTS = {"stride": 1, "present": False}


def member(attr: str) -> str:
    """`self.conv1`, `self.branch1.relu1` (in an opened scope); a part that is no Python name
    (`0`, `class`) through getattr."""
    out = "self"
    for part in attr.split("."):
        out = f"{out}.{part}" if plain(part) else f"getattr({out}, {part!r})"
    return out


def assign(attr: str, text: str) -> str:
    """The __init__ line that registers a module (None included) under `attr`."""
    owner, _, last = attr.rpartition(".")
    owner = member(owner) if owner else "self"
    return f"{owner}.{last} = {text}" if plain(last) else f"{owner}.add_module({last!r}, {text})"


def identifier(text: str, taken: set) -> str:
    name = re.sub(r"^__+", "_", re.sub(r"[^0-9A-Za-z_]", "_", text)) or "_"  # `__x` would be name-mangled
    name = "_" + name if name[0].isdigit() or keyword.iskeyword(name) else name
    base, n = name, 2
    while name in taken:
        name, n = f"{base}{n}", n + 1
    return name


@dataclass(slots=True)
class Argument:
    """One argument of a generated class's constructor."""

    base: str  # in_channels, width, stride, ...; numbered when several share it
    default: object  # None: required
    first: int  # the first slot it fills (a caller passes that slot's value)
    kind: type
    name: str = ""  # set once all the class's arguments are known (width1, width2, ...)


class Params:
    """The arguments of one generated class, from the values of all its instances."""

    def __init__(self, units: list[Unit], channels: tuple[tuple, tuple]) -> None:
        n = len(units[0].values)
        self.columns = [tuple(u.values[i][0] for u in units) for i in range(n)]
        self.roles = [units[0].values[i][1] for i in range(n)]
        self.channels = channels
        self.found: dict[tuple, Argument] = {}  # by typed column: equal columns share an argument
        self.named = False

    def constant(self, i: int):
        """The slot's value if every instance has the same, else None."""
        column = self.columns[i]
        return column[0] if len(set(_typed(column))) == 1 else None

    def text(self, i: int) -> str:
        """Source for slot i: a literal, or the name of the argument that carries it (empty
        while `name_arguments` is still finding the arguments)."""
        column = self.columns[i]
        if len(set(_typed(column))) == 1:
            return literal(column[0])
        key = _typed(column)
        if key not in self.found:
            assert not self.named, "an argument found after the arguments were named"
            role = self.roles[i]
            default = _ARG_DEFAULTS.get(role[0] if isinstance(role, tuple) else role)
            default = default if (type(default), default) in key else None
            self.found[key] = Argument(self._base(role, column), default, i, type(column[0]))
        return self.found[key].name

    def _base(self, role, column) -> str:
        if isinstance(role, tuple):  # ("present", attr)
            return role[1].rstrip("0123456789") or role[1]
        if role in CHANNELS:
            ins, outs = self.channels
            return "in_channels" if column == ins else "out_channels" if column == outs else "width"
        return role if role.isidentifier() else "arg"

    def name_arguments(self, render) -> None:
        """Call `render()`, which reads every slot the class's text uses, to find the arguments,
        then name them: a name depends on all of them (`width` alone, or width1, width2, ...)."""
        render()
        counts: dict[str, int] = {}
        for arg in self.found.values():
            counts[arg.base] = counts.get(arg.base, 0) + 1
        seen: dict[str, int] = {}
        for arg in self.found.values():
            seen[arg.base] = seen.get(arg.base, 0) + 1
            arg.name = identifier(f"{arg.base}{seen[arg.base]}" if counts[arg.base] > 1 else arg.base, RESERVED)
        self.named = True

    def arguments(self) -> list[Argument]:
        """The arguments in signature order: required (in_channels first, out_channels last),
        then those with defaults."""
        assert self.named
        order = {"in_channels": 0, "out_channels": 2}
        return sorted(self.found.values(), key=lambda a: (a.default is not None, order.get(a.base, 1)))

    def signature(self) -> list[str]:
        return [f"{a.name}: {a.kind.__name__}" + (f" = {literal(a.default)}" if a.default is not None else "")
                for a in self.arguments()]

    def call_args(self, text_of) -> list[str]:
        """Arguments of a call to this class; `text_of(i)` is the caller's source for slot i."""
        out = []
        for a in self.arguments():
            text = text_of(a.first)
            if a.default is None:
                out.append(text)
            elif text != literal(a.default):
                out.append(f"{a.name}={text}")
        return out


def _typed(column: tuple) -> tuple:
    return tuple((type(v), v) for v in column)


def literal(value) -> str:
    """Python source for a value; a long table of tuples is wrapped, rows kept whole."""
    text = repr(value)
    if len(text) <= WIDTH or not isinstance(value, tuple) or not all(isinstance(v, tuple) for v in value):
        return text
    lines, line = [], ""
    for row in map(repr, value):
        if line and len(line) + len(row) + 2 > WIDTH - 8:
            lines.append(line.rstrip())
            line = ""
        line += row + ", "
    lines.append(line.rstrip())
    return "(\n" + "\n".join("    " + ln for ln in lines) + "\n)"


# -- expressions ---------------------------------------------------------------------------

def expr(t, p: Params, names: dict, params: dict) -> str:
    """Source for a template (Layer, ClassCall or Slot) in class `p`."""
    match t:
        case Slot():
            return p.text(t.index)
        case ClassCall():
            return call(names[t.key], params[t.key].call_args(lambda j: p.text(t.slots[j].index)))
        case Layer(cls="named"):
            return call("named", [f"{k}={expr(v, p, names, params)}" for k, v in t.kwargs], force=True)
        case Layer(cls="nn.Sequential"):
            return call("nn.Sequential", _runs([expr(a, p, names, params) for a in t.args]))
        case Layer():
            args = [expr(a, p, names, params) for a in t.args]
            family = DEFAULTS.get(t.cls.split(".")[-1].rstrip("123d").rstrip("123"), {})
            kwargs = [f"{k}={expr(v, p, names, params)}" for k, v in t.kwargs if not _is_default(family, k, v, p)]
            return call(t.cls, args + kwargs)
    raise AssertionError(t)  # pragma: no cover


def _is_default(family: dict, key: str, value, p: Params) -> bool:
    if key not in family or not isinstance(value, Slot):
        return False
    column = p.columns[value.index]
    want = family[key]
    return all(type(v) is type(want) and v == want for v in column)


def _runs(parts: list[str]) -> list[str]:
    """Three or more equal consecutive elements become `*(part for _ in range(n))`."""
    out, i = [], 0
    while i < len(parts):
        j = i
        while j < len(parts) and parts[j] == parts[i]:
            j += 1
        out += [f"*({parts[i]} for _ in range({j - i}))"] if j - i >= 3 else parts[i:j]
        i = j
    return out


def call(name: str, parts: list[str], force: bool = False) -> str:
    inline = f"{name}({', '.join(parts)})"
    if not force and len(inline) <= WIDTH and "\n" not in inline or not parts:
        return inline
    body = "\n".join("    " + line for part in parts for line in (part + ",").split("\n"))
    return f"{name}(\n{body}\n)"
