"""The text of a generated class's forward. Values are named the way torchvision names
them: `x` down a chain, `out` beside a live input, `identity` for a shortcut, a branch's
name for a branch; a name is reused once the value in it is dead.
"""

from __future__ import annotations

import re

from cnndsl.backends.torch_code import RESERVED, identifier, member
from cnndsl.backends.torch_units import Unit


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
