"""Diagnostics: every error the tool reports has a span, a message and notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cnndsl.source import Span


@dataclass(frozen=True, slots=True)
class Note:
    """A secondary remark, optionally pointing at another place (e.g. a block's use)."""

    message: str
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One error: where, what, and what to do about it."""

    span: Span
    message: str
    notes: tuple[Note, ...] = ()
    severity: str = "error"

    def render(self) -> str:
        """`file:line:col: error: message`, the source line with carets, then the notes."""
        out = [f"{self.span.location}: {self.severity}: {self.message}", self.span.render()]
        for note in self.notes:
            if note.span is None:
                out.append(f"  = {note.message}")
            else:
                out.append(f"{note.span.location}: note: {note.message}")
                out.append(note.span.render())
        return "\n".join(out)


class CnnDslError(Exception):
    """The one exception cnndsl raises for bad input: it carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = tuple(sorted(dict.fromkeys(diagnostics), key=_order))  # a block used twice errs once
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.diagnostics)
        body = "\n\n".join(d.render() for d in self.diagnostics)
        return f"{body}\n\n{n} error{'s' if n != 1 else ''}"


def _order(d: Diagnostic) -> tuple:
    return (d.span.source.name, d.span.line, d.span.col, d.message)


class Collector:
    """Gathers diagnostics during a pass so that all of them are reported at once."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, span: Span, message: str, *notes: Note) -> None:
        self.items.append(Diagnostic(span, message, tuple(notes)))

    def raise_if_any(self) -> None:
        if self.items:
            raise CnnDslError(self.items)
