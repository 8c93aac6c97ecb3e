"""Source text and spans: where every AST node, IR node and diagnostic points."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Source:
    """A named piece of .arch text (a file, or a string given to the API).

    Line ends are read as Python reads a text file: "\\r\\n" and a lone "\\r" become "\\n",
    so a string given to the API is located exactly as the same text in a file."""

    name: str
    text: str = field(repr=False)
    # Offsets where each line starts, computed on first use: rendering N diagnostics
    # then costs N lines, not N splits of the whole text.
    _starts: array | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "\r" in self.text:
            object.__setattr__(self, "text", self.text.replace("\r\n", "\n").replace("\r", "\n"))

    @classmethod
    def from_path(cls, path: str | Path) -> "Source":
        """Read a file as UTF-8; the name is the path as given."""
        return cls(str(path), Path(path).read_text(encoding="utf-8"))

    def line_text(self, line: int) -> str:
        """The text of a 1-based line without its "\\n"; "" past the end. Lines end at
        "\\n" only, as the parser counts them (not at \\f, \\v or \\u2028)."""
        starts = self._line_starts()
        if not 0 < line <= len(starts):
            return ""
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[starts[line - 1]:end]

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based (line, column) of a character offset."""
        starts = self._line_starts()
        line = bisect_right(starts, offset)
        return line, offset - starts[line - 1] + 1

    def _line_starts(self) -> array:
        starts = self._starts
        if starts is None:  # each line starts one past the end of the one before
            starts = array("q", [0])  # 8 bytes a line, not an int object
            starts.extend(accumulate(map((1).__add__, map(len, self.text.split("\n")))))
            starts.pop()
            object.__setattr__(self, "_starts", starts)
        return starts


# Characters a terminal would break the line at, or move the cursor for: shown as a space,
# so that the carets stay under the columns the parser counts (one column each, like a tab).
_BLANK = str.maketrans({c: " " for c in "\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


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
        text = self.source.line_text(self.line).expandtabs(1).translate(_BLANK)
        end = self.end_col if self.end_line == self.line else len(text) + 1
        width = max(1, min(end, len(text) + 1) - self.col)
        text, col, width = _clip(text, self.col, width)
        gutter = f"{self.line:>4} | "
        return f"{gutter}{text}\n{' ' * len(gutter)}{' ' * (col - 1)}{'^' * width}"


SHOWN = 160  # characters of a long line shown around the span


def _clip(text: str, col: int, width: int) -> tuple[str, int, int]:
    """A line longer than SHOWN cut to SHOWN characters around the span, `...` marking the cuts
    (a 1 MB line is not printed whole); the column and caret width follow the cut."""
    if len(text) <= SHOWN:
        return text, col, width
    start = max(0, min(col - 1 - SHOWN // 4, len(text) - SHOWN))
    head = "..." if start else ""
    shown = text[start:start + SHOWN]
    tail = "..." if start + SHOWN < len(text) else ""
    width = max(1, min(width, SHOWN - (col - 1 - start)))
    return head + shown + tail, col - start + len(head), width
