"""Part (a) of benchmarks/fuzz.py: mutated .arch text through `cnndsl.loads` and the rendering
of its report or diagnostics.

`mutant(seed, index)` is a pure function of its arguments (stdlib only, so the runner can
regenerate any input to save or reduce it); `examine(text)` runs it through cnndsl and says
what went wrong, if anything.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALID = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "architectures").glob("*.arch"))]
INVALID = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "architectures" / "invalid").glob("*.arch"))]
CORPUS = VALID + INVALID
TOKEN = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|[A-Za-z_][\w-]*|[ \t]+|\n|.", re.S)
VOCAB = sorted({t for text in CORPUS for t in TOKEN.findall(text) if t.strip()})
LINES = sorted({line for text in CORPUS for line in text.split("\n") if line.strip()})

NUMBERS = ["0", "-1", "1", "2", "00", "007", "-0", "0.0", "1.5", ".5", "5.", "1e3", "1e-308", "1e308", "1e309",
           "-1e308", "2147483647", "2147483648", "4294967296", "9223372036854775808", "2**31", "1" + "0" * 30,
           "1" + "0" * 309, "9" * 4301, "1" * 5000, "0x10", "1_000", "nan", "inf", "10^15", "1/0", "0/0", "k/0",
           "2147483647*2147483647*2147483647", "*".join(["10"] * 40)]
UNICODE = ["\u00d7", "\U0001F600", "\U0001D7D1", "\u202e", "\u200f", "\u0645\u0631\u062d\u0628\u0627", "\x00",
           "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\ufeff", "\u0301", "\uff13", "\u0663", "\u00b9", "\u216b",
           "\t", "\u00df", "\u0130", "\ufb03", "\u00a0", "\u3000", "\u200b", "\U00010000", "\ufffd"]
NEWLINES = ["\r\n", "\r", "\n\n", "\r\r\n", "\n\r", ""]


def mutant(seed: int, index: int) -> tuple[str, str]:
    """Input number `index` of the campaign `seed`: (text, the operators applied, for the record)."""
    rng = random.Random(f"mutate:{seed}:{index}")
    text = rng.choice(VALID if rng.randrange(4) else INVALID)  # mostly valid: mutants get past the parser
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        name, op = rng.choices(OPERATORS, WEIGHTS)[0]
        text = op(rng, text)
        names.append(name)
    return text, "+".join(names)


# -- token level -------------------------------------------------------------------------------

def _token_edit(rng: random.Random, text: str) -> str:
    tokens = TOKEN.findall(text)
    solid = [i for i, t in enumerate(tokens) if t.strip()] or [0]
    for _ in range(rng.choice((1, 1, 2, 3))):
        i = rng.choice(solid) % max(1, len(tokens))
        match rng.randrange(5):
            case 0:
                tokens[i:i + 1] = [rng.choice(VOCAB)]
            case 1:
                tokens[i:i + 1] = []
            case 2:
                tokens[i:i] = [tokens[i] if tokens else "", " "]
            case 3:
                tokens[i:i] = [rng.choice(VOCAB), " "]
            case _:
                j = min(len(tokens) - 1, i + 2)
                if tokens:
                    tokens[i], tokens[j] = tokens[j], tokens[i]
    return "".join(tokens)


def _numbers(rng: random.Random, text: str) -> str:
    spots = [m.span() for m in re.finditer(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", text)]
    for _ in range(rng.choice((1, 1, 2))):
        if not spots:
            break
        a, b = rng.choice(spots)
        text = text[:a] + rng.choice(NUMBERS) + text[b:]
        spots = [m.span() for m in re.finditer(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", text)]
    return text


def _unicode(rng: random.Random, text: str) -> str:
    for _ in range(rng.choice((1, 1, 2, 3))):
        k = rng.randrange(len(text) + 1)
        text = text[:k] + rng.choice(UNICODE) + text[k:]
    return text


def _newlines(rng: random.Random, text: str) -> str:
    match rng.randrange(4):
        case 0:
            return text.replace("\n", rng.choice(NEWLINES[:2]))
        case 1:
            return text.rstrip("\n") if text.endswith("\n") else text + rng.choice(NEWLINES)
        case 2:
            spots = [m.end() for m in re.finditer(r"[:,{\[;]|\n", text)] or [len(text)]
            k = rng.choice(spots)
            return text[:k] + rng.choice(NEWLINES) + text[k:]
        case _:
            k = rng.randrange(len(text) + 1)
            return text[:k] + rng.choice(NEWLINES) + text[k:]


# -- line level, splices -----------------------------------------------------------------------

def _lines(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    match rng.randrange(6):
        case 0:
            del lines[i]
        case 1:
            lines.insert(i, lines[i])
        case 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        case 3:
            lines.insert(rng.randrange(len(lines) + 1), lines.pop(i))
        case 4:
            lines.insert(i, rng.choice(LINES))
        case _:
            lines[i] = ""
    return "\n".join(lines)


def _splice(rng: random.Random, text: str) -> str:
    other = rng.choice(CORPUS)
    if rng.randrange(2):
        a, b = text.split("\n"), other.split("\n")
        return "\n".join(a[:rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1):])
    return text[:rng.randrange(len(text) + 1)] + other[rng.randrange(len(other) + 1):]


def _truncate(rng: random.Random, text: str) -> str:
    return text[:rng.randrange(len(text) + 1)]


# -- shapes that stress limits: nesting, long chains, repeats, size --------------------------------

def _nesting(rng: random.Random, text: str) -> str:
    n = rng.choice((8, 50, 200, 600, 1500, 5000))
    line = rng.choice(["3x3 conv, 8", "relu", "identity", "max pool", "", "1x1, 4"])
    deep = rng.choice([
        "[" * n + line + "]" * n,
        "[" * n + line + "] x 2" * n,
        "concat {\n" * n + line + "\n}" * n,
        "FC " + "(" * n + "1" + ")" * n,
        "FC " + "+".join(["1"] * n),
        f"let k = {'-' * n}1\nFC k",
        "3x3 conv, " + "*".join(["2"] * n),
        "".join(f"block b{i}() {{\n  b{i + 1}()\n}}\n" for i in range(n)) + f"block b{n}() {{\n  relu\n}}\nb0()",
        "block a() {\n  a()\n}\n" + "[" * 3 + "a() x 1000" + "] x 1000" * 3,
        f"[] x {10 ** rng.randrange(1, 40)}",
        f"[{line}] x {10 ** rng.randrange(1, 40)}",
    ])
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), deep)
    return "\n".join(lines)


def _bulk(rng: random.Random, text: str) -> str:
    """Large but plausible input: one line repeated (up to about 1 MB), or one very long line."""
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    if rng.randrange(2):
        most = 1_000_000 // (len(lines[i]) + 1)  # up to about 1 MB
        lines[i:i + 1] = [lines[i]] * min(most, rng.choice((100, 1000, 10_000, 50_000)))
    else:
        lines[i] += ", stride 1" * rng.choice((100, 1000, 30_000, 99_000))
    return "\n".join(lines)


SNIPPETS = ["activation tanh", "activation none", "activation leaky relu", "shortcut zero-pad", "shortcut projection",
            "residual stride on first", "conv = conv -> batch norm -> relu", "fc = fc -> dropout", "add {L}",
            "concat {L}, crop", "concat {L}, pad", "add {L}, pad", "{L}: relu", "[3x3 conv, 8; relu] x 2, residual",
            "[3x3, 8] x 2, residual, stride 2", "concat {\n  identity\n  3x3 conv, 4\n}", "add {\n  identity\n}",
            "add {\n  [1x1 conv, 4; relu]\n  1x1 conv, 4\n}", "block q(a) {\n  3x3 conv, a\n}\nq(4)", "q(4) x 3",
            "global average pool", "global max pool", "flatten", "up-conv 2x2, 4", "2x2 up-conv, 4, stride 3, pad 1",
            "maxout 2", "subsample 2x2", "LRN 5", "LRN 4", "FC 10", "softmax", "dropout 0.5", "3 conv, 4",
            "3x3x3 conv, 4", "1x7 conv, 4, pad 0x3", "5x5 conv, 6, table m0-m1", "3x3 max pool, stride 2, pad 1, ceil",
            "2x2 average pool, stride 2, pad 1, ceil", "input 1x1x1", "input 7x7x3", "input 100x3", "input 4x4x4x2",
            "let k = 0", "3x3 conv, 4, groups 3", "3x3 conv, 4, dilation 9", "batch norm, eps 0", "relu", "elu"]


def _snippet(rng: random.Random, text: str) -> str:
    """A line of the language, maybe naming a label of the text, inserted anywhere."""
    labels = re.findall(r"^\s*([A-Za-z_]\w*)\s*:", text, flags=re.M) or ["c1"]
    line = rng.choice(SNIPPETS).replace("{L}", rng.choice(labels))
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), line)
    return "\n".join(lines)


OPERATORS = [("token", _token_edit), ("number", _numbers), ("unicode", _unicode), ("newline", _newlines),
             ("line", _lines), ("splice", _splice), ("truncate", _truncate), ("nest", _nesting), ("bulk", _bulk),
             ("snippet", _snippet)]
WEIGHTS = [30, 20, 10, 10, 20, 8, 3, 3, 0.2, 15]


# -- running one input ------------------------------------------------------------------------

def examine(text: str, training: bool = False) -> tuple[object, tuple[str, str] | None]:
    """Check `text` as `cnndsl check` would, and render what it prints: (the network if the
    checker accepts it, else None; a problem (kind, detail): a diagnostic that points outside
    the text or leaks a parser internal, or None). Any exception but CnnDslError propagates:
    that is a crash."""
    import json

    import cnndsl
    from cnndsl.passes.report import render
    try:
        net = cnndsl.loads(text, name="fuzz.arch", training=training)
    except cnndsl.CnnDslError as exc:
        rendered = exc.render()
        rendered.encode("utf-8")  # what the CLI does when it prints
        return None, _bad_diagnostic(exc, text)
    render(net.report).encode("utf-8")
    json.dumps(net.report.to_json())
    return net, None


CLI_FLAGS = [[], ["--json"], ["--expand"], ["--input", "7x7x3"], ["--input", "64x64x1"], ["--input", "100x3"],
             ["--input", "4x8x8x2"], ["--batch", "3", "--dtype", "fp16"], ["--training", "--optimizer", "adam"],
             ["--training", "--batch", "1000000"]]


def examine_cli(text: str, path: str, flags: list[str] = ()) -> tuple[str, str] | None:
    """`cnndsl check FILE FLAGS` (in this process) on `text` written as a UTF-8 file: None when
    it exits 0 or 1 with output to match, else ("cli", what happened)."""
    import contextlib
    import io

    from cnndsl.cli import main
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", path, *flags])
    if code not in (0, 1) or "Traceback" in err.getvalue() or (code == 1) != bool(err.getvalue()):
        return "cli", f"cnndsl check {' '.join(flags)} exited {code}: {err.getvalue()[-200:]}"
    return None


def _bad_diagnostic(exc, text: str) -> tuple[str, str] | None:
    if not exc.diagnostics:
        return "diagnostic", "CnnDslError with no diagnostics"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # line ends as a text file's
    for d in exc.diagnostics:
        s = d.span
        if not 1 <= s.line <= len(lines):
            return "diagnostic", f"line {s.line} outside 1..{len(lines)}: {d.message[:120]}"
        width = len(lines[s.line - 1])
        if not 1 <= s.col <= width + 1:
            return "diagnostic", f"line {s.line} col {s.col} outside 1..{width + 1}: {d.message[:120]}"
        if not d.message or "__ANON" in d.message or "Token(" in d.message:
            return "diagnostic", f"parser internals in the message: {d.message[:120]}"
    return None
