"""`python benchmarks/fuzz.py reduce FILE`: shrink a failing input while it fails the same way."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

from fuzz_work import _backends, _compile, _mutate, _prepare


class _Alarm(BaseException):
    pass


def signature(part: str, text: str, seconds: float = 10.0) -> str | None:
    """The key of the finding `text` gives (a hang: "hang"), None if it gives none."""
    def ring(*_):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        stats = collections.Counter()
        if part == "mutate":
            finding, net = _mutate(text, 1, "", stats)
            finding = finding or (net is not None and _compile(net, 1, "", stats)) or None
        else:
            finding = _backends(text, 1, "", stats)
    except _Alarm:
        return "hang"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return finding["key"] if finding else None


def reduce_file(path: Path, budget: int, part: str | None = None) -> int:
    """Shrink the input at `path` (lines, then runs of characters) while it fails the same way;
    print the result and write it next to the input as NAME.min.arch."""
    part = part or ("backends" if path.name.startswith("backends") else "mutate")
    _prepare(part)
    with open(path, encoding="utf-8", newline="") as f:  # keep \r as it is
        text = f.read()
    want = signature(part, text)
    if want is None:
        print(f"{path}: no finding to reduce")
        return 1
    tries = [0]

    def same(candidate: str) -> bool:
        tries[0] += 1
        return tries[0] <= budget and signature(part, candidate) == want

    for unit in ("\n", None):
        text = _ddmin(text, unit, same)
    out = path.with_suffix(".min.arch")
    out.write_text(text, encoding="utf-8", newline="")
    print(f"{want}\n{len(text)} characters after {tries[0]} tries, in {out}:\n{text}\n{text!r}")
    return 0


def _ddmin(text: str, unit: str | None, same) -> str:
    parts = text.split(unit) if unit else list(text)
    join = (unit or "").join
    chunk = max(1, len(parts) // 2)
    while chunk >= 1:
        i, changed = 0, False
        while i < len(parts):
            candidate = parts[:i] + parts[i + chunk:]
            if candidate != parts and same(join(candidate)):
                parts, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return join(parts)
