"""Text for the generated PyTorch source: constructor expressions, class arguments, forward.

`Params` decides a class's arguments: a value that differs between the class's
instances becomes an argument (equal columns share one), named after its role:
in_channels / out_channels when it is the block's input / output width, width (width1,
width2, ...) for other channel counts, stride, or the shortcut's name for whether it
projects. `forward` names values the way torchvision does: `x` down a chain, `out`
beside a live input, `identity` for a shortcut, a branch's name for a branch.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

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
        out = f"{out}.{part}" if _plain(part) else f"getattr({out}, {part!r})"
    return out


def assign(attr: str, text: str) -> str:
    """The __init__ line that registers a module (None included) under `attr`."""
    owner, _, last = attr.rpartition(".")
    owner = member(owner) if owner else "self"
    return f"{owner}.{last} = {text}" if _plain(last) else f"{owner}.add_module({last!r}, {text})"


def _plain(name: str) -> bool:
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)


def identifier(text: str, taken: set) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", text) or "_"
    name = "_" + name if name[0].isdigit() or keyword.iskeyword(name) else name
    base, n = name, 2
    while name in taken:
        name, n = f"{base}{n}", n + 1
    return name


@dataclass(slots=True)
class Argument:
    """One argument of a generated class's constructor."""

    token: str  # stands for the name in text rendered before all arguments are known
    base: str  # in_channels, width, stride, ...; numbered when several share it
    default: object  # None: required
    first: int  # the first slot it fills (a caller passes that slot's value)
    kind: type
    name: str = ""


class Params:
    """The arguments of one generated class, from the values of all its instances."""

    def __init__(self, units: list[Unit], channels: tuple[tuple, tuple]) -> None:
        n = len(units[0].values)
        self.columns = [tuple(u.values[i][0] for u in units) for i in range(n)]
        self.roles = [units[0].values[i][1] for i in range(n)]
        self.channels = channels
        self.found: dict[tuple, Argument] = {}  # by typed column: equal columns share an argument

    def constant(self, i: int):
        """The slot's value if every instance has the same, else None."""
        column = self.columns[i]
        return column[0] if len(set(_typed(column))) == 1 else None

    def text(self, i: int) -> str:
        """Source for slot i: a literal, or (a placeholder for) the argument that carries it."""
        column = self.columns[i]
        if len(set(_typed(column))) == 1:
            return literal(column[0])
        key = _typed(column)
        if key not in self.found:
            role = self.roles[i]
            default = _ARG_DEFAULTS.get(role[0] if isinstance(role, tuple) else role)
            default = default if (type(default), default) in key else None
            self.found[key] = Argument(f"\0{len(self.found)}\0", self._base(role, column), default, i, type(column[0]))
        return self.found[key].token

    def _base(self, role, column) -> str:
        if isinstance(role, tuple):  # ("present", attr)
            return role[1].rstrip("0123456789") or role[1]
        if role in CHANNELS:
            ins, outs = self.channels
            return "in_channels" if column == ins else "out_channels" if column == outs else "width"
        return role if role.isidentifier() else "arg"

    def arguments(self) -> list[Argument]:
        """The arguments in signature order, named: required (in_channels first, out_channels
        last), then those with defaults."""
        counts: dict[str, int] = {}
        for arg in self.found.values():
            counts[arg.base] = counts.get(arg.base, 0) + 1
        seen: dict[str, int] = {}
        for arg in self.found.values():
            seen[arg.base] = seen.get(arg.base, 0) + 1
            arg.name = identifier(f"{arg.base}{seen[arg.base]}" if counts[arg.base] > 1 else arg.base, RESERVED)
        order = {"in_channels": 0, "out_channels": 2}
        return sorted(self.found.values(), key=lambda a: (a.default is not None, order.get(a.base, 1)))

    def signature(self) -> list[str]:
        return [f"{a.name}: {a.kind.__name__}" + (f" = {literal(a.default)}" if a.default is not None else "")
                for a in self.arguments()]

    def finish(self, lines: list[str]) -> list[str]:
        """The lines with every placeholder replaced by its argument's name."""
        names = {a.token: a.name for a in self.arguments()}
        return [re.sub("\0\\d+\0", lambda m: names[m.group(0)], line) for line in lines]

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


# -- forward -------------------------------------------------------------------------------

def input_names(n: int) -> list[str]:
    """forward's arguments: x, then the skips read from outside (skip, skip2, ...)."""
    return ["x"] + [f"skip{k if k > 1 else ''}" for k in range(1, n)]


def forward(unit: Unit, attrs: dict[str, str], optional: dict[str, str]) -> list[str]:
    """The body of a class's forward; `attrs`: the attribute each item calls, `optional`:
    each optional shortcut's mode (a `never` one is the identity: its value is its input)."""
    alias = {item.makes[0]: item.reads[0] for item in unit.items
             if item.apply == "same" or item.apply == "optional" and optional[item.attr] == "never"}
    w = _Writer(unit, alias)
    lines: list[str] = []
    for p, item in enumerate(unit.items):
        if item.apply == "group":
            continue
        if item.apply == "input":
            w.take(item.makes[0], "x")
        elif item.makes[0] not in alias:
            args = [w.var[w.root(v)] for v in item.reads]
            targets = [w.take(v, w.fresh(w.preference(p, v, args), p)) for v in item.makes]
            attr = attrs.get(item.attr, item.attr)
            lines += _statement(item, attr, optional.get(item.attr), args, ", ".join(targets))
    result = ", ".join(w.var[v] for v in w.outputs)
    last_makes_it = len(w.outputs) == 1 and w.outputs[0] in unit.items[-1].makes
    if lines and last_makes_it and lines[-1].startswith(f"{result} = "):
        return lines[:-1] + ["return " + lines[-1][len(result) + 3:]]
    return lines + [f"return {result}"]


class _Writer:
    """Variable names for forward: which value lives in which name, and until when."""

    def __init__(self, unit: Unit, alias: dict[int, int]) -> None:
        self.items, self.alias = unit.items, alias
        self.readers: dict[int, list[int]] = {}  # value -> positions of the items that read it
        for p, item in enumerate(self.items):
            if not (item.makes and item.makes[0] in alias):
                for v in item.reads:
                    self.readers.setdefault(self.root(v), []).append(p)
        self.outputs = [self.root(v) for v in unit.scope.outputs]
        self.last = {v: max(ps) for v, ps in self.readers.items()} | {v: len(self.items) for v in self.outputs}
        self.var: dict[int, str] = {}
        self.holder: dict[str, int] = {}
        for v, name in zip(unit.scope.inputs, input_names(len(unit.scope.inputs))):
            self.take(v, name)

    def root(self, v: int) -> int:
        while v in self.alias:
            v = self.alias[v]
        return v

    def free(self, name: str, p: int) -> bool:
        """No live value is in `name` after item p has read its inputs."""
        return name not in RESERVED and (name not in self.holder or self.last.get(self.holder[name], -1) <= p)

    def fresh(self, preferred: str, p: int) -> str:
        preferred = identifier(preferred.rpartition(".")[2], set())  # `branch1.x` -> x, `0` -> _0
        name, n = preferred, 2
        while not self.free(name, p):
            name, n = f"{preferred}{n}", n + 1
        return name

    def take(self, v: int, name: str) -> str:
        self.var[v], self.holder[name] = name, v
        return name

    def preference(self, p: int, v: int, args: list[str]) -> str:
        """A name for value v of item p: `identity` for a shortcut, a branch's own name
        when it is kept for a join, else the main variable (`x` / `out`) it continues."""
        item, read_at = self.items[p], self.readers.get(v, [])
        long_lived = read_at != [p + 1] and bool(read_at) or (v in self.outputs and p != len(self.items) - 1)
        if item.apply == "optional":
            return "identity"
        if item.apply == "unit" and (long_lived or any(self.items[r].apply in ("add", "cat") for r in read_at)):
            return item.attr
        if len(item.makes) > 1:
            return f"{item.attr}_out"
        dying = [a for a in dict.fromkeys(args) if self.last.get(self.holder.get(a), -1) <= p]
        if not long_lived:
            main = [a for a in dying if re.fullmatch(r"(x|out)\d*", a)]
            if main:
                return main[0]
            if dying and (len(args) == 1 or item.apply in ("crop", "pad")):
                return dying[0]
        return "x" if self.free("x", p) else "out"


def _statement(item, attr: str, mode: str | None, args: list[str], target: str) -> list[str]:
    a = args[0] if args else ""
    attr = member(attr)
    match item.apply:
        case "call":
            return [f"{target} = {attr}({a})"]
        case "call_flat":
            return [f"{target} = torch.flatten({a}, 1)", f"{target} = {attr}({target})"]
        case "call_vec":
            return [f"{target} = {attr}({a}.unsqueeze(-1)).squeeze(-1)"]
        case "flatten":
            return [f"{target} = torch.flatten({a}, 1)"]
        case "add":
            return [f"{target} = {' + '.join(args)}"]
        case "cat":
            return [f"{target} = torch.cat([{', '.join(args)}], 1)"]
        case "crop" | "pad":
            fn = "center_crop" if item.apply == "crop" else "zero_pad"
            return [f"{target} = {fn}({', '.join(args)})"]
        case "unit":
            return [f"{target} = {attr}({', '.join(args)})"]
        case "optional":
            if mode == "always":
                return [f"{target} = {attr}({a})"]
            return [f"{target} = {a} if {attr} is None else {attr}({a})"]
    raise AssertionError(item.apply)  # pragma: no cover
