"""Source text and spans: where every AST node, IR node and diagnostic points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Source:
    """A named piece of .arch text (a file, or a string given to the API)."""

    name: str
    text: str = field(repr=False)

    @classmethod
    def from_path(cls, path: str | Path) -> "Source":
        """Read a file as UTF-8; the name is the path as given."""
        return cls(str(path), Path(path).read_text(encoding="utf-8"))

    def line_text(self, line: int) -> str:
        lines = self.text.split("\n")  # as the parser counts lines: not at \f, \v or \u2028
        return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source: 1-based line and column, end exclusive, on one line or more."""

    source: Source = field(repr=False, compare=False)
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def location(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"

    def render(self) -> str:
        """The source line with carets under the span (first line only)."""
        text = self.source.line_text(self.line).rstrip("\n").expandtabs(1)
        end = self.end_col if self.end_line == self.line else len(text) + 1
        width = max(1, min(end, len(text) + 1) - self.col)
        gutter = f"{self.line:>4} | "
        return f"{gutter}{text}\n{' ' * len(gutter)}{' ' * (self.col - 1)}{'^' * width}"

    def merge(self, other: "Span") -> "Span":
        """The smallest span covering both."""
        start = min((self.line, self.col), (other.line, other.col))
        end = max((self.end_line, self.end_col), (other.end_line, other.end_col))
        return Span(self.source, start[0], start[1], end[0], end[1])
