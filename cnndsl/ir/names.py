"""Node names as torchvision spells them: `conv3` numbered by kind within a scope, `input`,
`downsample` and `add` unnumbered the first time, a user's label as written."""

from __future__ import annotations

from cnndsl.ir.expr import BuildError
from cnndsl.source import Span

_UNNUMBERED = frozenset({"input", "downsample", "add", "concat"})  # torchvision's names: x, downsample


class Names:
    """The names taken in each scope (a scope is the tuple of enclosing groups and block uses)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[tuple[str, ...], str], int] = {}
        self.taken: set[tuple[tuple[str, ...], str]] = set()
        self.written: dict[tuple[str, ...], set[str]] = {}  # labels a scope's lines carry

    def reserve(self, scope: tuple[str, ...], lines) -> None:
        """Generated names avoid these lines' labels (`conv2: [...]` after two plain convs)."""
        self.written.setdefault(scope, set()).update(line.label for line in lines)

    def fresh(self, scope: tuple[str, ...], kind: str) -> str:
        """The next free name such as `conv3` in a scope (torchvision's numbering)."""
        while True:
            key = (scope, kind)
            n = self.counters[key] = self.counters.get(key, 0) + 1
            leaf = kind if kind in _UNNUMBERED and n == 1 else f"{kind}{n}"
            if (scope, leaf) not in self.taken and leaf not in self.written.get(scope, ()):
                self.taken.add((scope, leaf))
                return leaf

    def claim(self, scope: tuple[str, ...], label: str, span: Span) -> str:
        """A user's label as a node name; it must not collide with a name already made."""
        if (scope, label) in self.taken:
            raise BuildError(span, f"name '{label}' is already used in this scope")
        self.taken.add((scope, label))
        return label
