"""Fuzzing: whatever text comes in, cnndsl answers with diagnostics, never a crash.

Random token soup, random plausible layer lines, and mutations of the real files in
architectures/ go through `cnndsl.loads`; the only exception allowed out is
CnnDslError, and every diagnostic it carries points inside the text. A sample also
goes through `cnndsl check` as a file: exit code 0 or 1, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from conftest import ROOT, examples, run_cli

CORPUS = sorted((ROOT / "architectures").glob("*.arch"))
TEXTS = {p.name: p.read_text(encoding="utf-8") for p in CORPUS}


def fuzz(n: int) -> settings:
    """n examples under the loaded profile (ci: derandomized, 2 s deadline an example; see conftest)."""
    return settings(max_examples=examples(n))


WORDS = ["conv", "pool", "max", "average", "avg", "global", "FC", "relu", "leaky", "elu", "tanh", "sigmoid",
         "softmax", "batch", "norm", "dropout", "flatten", "LRN", "maxout", "up-conv", "subsample", "input",
         "network", "activation", "none", "let", "block", "concat", "add", "identity", "residual", "shortcut",
         "projection", "zero-pad", "stride", "pad", "same", "valid", "dilation", "groups", "bias", "off", "on",
         "ceil", "table", "m012-m123", "m9", "crop", "alpha", "beta", "k", "p", "eps", "kernel", "first",
         "conv2_x", "b", "n"]
SIZES = ["1x1", "2x2", "3x3", "5x5", "7x7", "11x11", "1x7", "3", "3x3x3", "0x0", "0x3", "3x3x3x3x3",
         "224x224x3", "32x32x3", "7x7x3", "1x1x1", "56x300", "16x112x112x3", "99999999999x3", "2000000000x2000000000",
         "2147483647x1"]
NUMBERS = ["0", "1", "2", "3", "4", "16", "64", "1000", "-1", "-5", "0.5", "1.5", "1e3", "1e-4", ".5",
           "1000000000000", "99999999999999999999999", "1e308", "1e999", "2000000000", "2147483647", "2147483648"]
PUNCT = [",", ";", "[", "]", "{", "}", "(", ")", "x", ":", "#", "\n", "\n", "=", "->", "*", "/", "+", "-",
         "0/0", "k/0"]
TOKENS = WORDS + SIZES + NUMBERS + PUNCT


def assert_handled(text: str) -> None:
    """`loads` succeeds, or raises CnnDslError whose diagnostics all point into the text."""
    try:
        net = cnndsl.loads(text, name="fuzz.arch")
    except cnndsl.CnnDslError as exc:
        assert exc.diagnostics, "a CnnDslError with no diagnostics"
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # line ends as in a text file
        for d in exc.diagnostics:
            assert 1 <= d.span.line <= len(lines), (d.span, d.message)
            assert d.span.col >= 1, (d.span, d.message)
            assert d.span.col <= len(lines[d.span.line - 1]) + 1, (d.span, d.message)
            assert d.message and "__ANON" not in d.message
        exc.render()
    else:
        assert net.report.totals.params >= 0


# -- (a) random text from the language's tokens ---------------------------------------------

token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join)

def mostly(usual: list[str], odd: list[str]) -> st.SearchStrategy[str]:
    """Usually a sensible choice (so programs get past the parser), sometimes an odd one."""
    return st.sampled_from(usual * -(-3 * len(odd) // len(usual)) + odd)  # 3 usual draws to 1 odd


number = mostly(["1", "2", "3", "8", "16", "64", "k", "2*k", "(k+1)"],
                NUMBERS + ["k/0", "-k", "k-4", "1/3", "0.0", "16*k*k*k*k*k*k*k*k"])
size = mostly(["1x1", "2x2", "3x3", "5x5", "7x7"], SIZES)
LAYERS = ["{s} conv, {n}", "{s} conv, {n}", "{s} conv, {n}, stride {n}", "{s} conv, {n}, pad {n}",
          "max pool", "{s} max pool, stride {n}", "average pool", "FC {n}", "batch norm", "relu", "dropout 0.5",
          "global average pool", "flatten", "up-conv 2x2, {n}", "LRN 5, alpha 0.0001, beta 0.75, k 2", "maxout 2",
          "softmax", "subsample 2x2", "5x5 conv, 4, table m012-m123-m230-m301", "leaky relu 0.1", "b({n})",
          "{s} conv, {n}, dilation {n}", "{s} conv, {n}, groups {n}", "{s} max pool, stride {n}, pad {n}, ceil"]
ODD_LAYERS = ["{s} {w}", "{w} {n}", "{s} {w} {n}", "{w}", "concat c1", "add c1, crop", "concat c1, pad", "identity",
              "b()", "b({n}, {n})", "{s} up-conv, {n}, stride {n}", "global max pool", "{s} subsample",
              "{s} conv, {n}, table {t}", "maxout {n}", "dropout {n}", "LRN {n}", "FC {n}, bias off"]
option = st.one_of(number, st.tuples(mostly(["stride", "pad", "groups"],
                                            ["dilation", "bias", "table", "alpha", "ceil", "residual", "crop",
                                             "p", "strid", "kernel", "eps"]),
                                     st.one_of(st.just(""), number, size,
                                               st.sampled_from(["same", "valid", "off", "m012-m123", "m0-m1",
                                                                "m0-mx", "m", "m1_", "m99"])))
                   .map(" ".join))


@st.composite
def head(draw) -> str:
    """One layer from a template; the placeholders drawn independently."""
    template = draw(mostly(LAYERS, ODD_LAYERS))
    fill = {"s": size, "n": number, "w": st.sampled_from(WORDS), "t": st.sampled_from(["m0-mx", "m", "m9-m0"])}
    out = ""
    for i, part in enumerate(template.split("{")):
        if i == 0:
            out += part
        else:
            key, rest = part.split("}", 1)
            out += draw(fill[key]) + rest
    return out


@st.composite
def layer_line(draw, depth: int = 0) -> str:
    if depth < 2 and draw(st.integers(0, 5)) == 0:
        inner = draw(st.lists(layer_line(depth + 1), min_size=1, max_size=3))
        body = "[" + "; ".join(inner) + "]" if draw(st.booleans()) else "concat {\n" + "\n".join(inner) + "\n}"
    else:
        body = draw(head())
    label = draw(mostly([""], ["c1: ", "conv2_x: "]))
    repeat = draw(mostly([""], [" x 2", " x 3", " x 0", " x -1", " x k", " x 5000000", " x 1000"]))
    if "," in body and not body.startswith(("[", "concat {")):  # the repeat goes before the options
        first, rest = body.split(",", 1)
        body, repeat = first + repeat, "," + rest
    opts = draw(st.lists(option, max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    if body.startswith("[") and draw(st.booleans()):
        opts = [draw(st.sampled_from(["residual", "residual, stride 2", "stride 2"])), *opts]
    return label + body + repeat + "".join(", " + o for o in opts)


@st.composite
def program(draw) -> str:
    header = [draw(mostly(["input 32x32x3", "input 8x8x1", "input 64x64x3"],
                          ["input 0x5x3", "input 56x300", "input 784", "input 3x3x3", "", "input 4x16x16x3",
                           "input 224x224x3", "input 1x1x1", "input 2147483647x2147483647x3"]))]
    header.append(draw(mostly(["let k = 4", "let k = 2"], ["let k = 0", "let k = -2", "let k = 1e20", "let k = 1/3",
                                                          "let k = 2147483647", ""])))
    header += draw(st.lists(mostly(["activation relu", "block b(n) {\n3x3 conv, n\nrelu\n}"],
                                   ["conv = conv -> batch norm -> relu", "block b() {\nb()\n}",
                                    "residual stride on first", "shortcut zero-pad", "activation leaky relu 0.1"]),
                           max_size=3, unique=True))
    body = draw(st.lists(layer_line(), min_size=1, max_size=6))
    return "\n".join(header + body) + draw(st.sampled_from(["", "\n"]))


@fuzz(700)
@given(token_soup)
def test_token_soup(text):
    assert_handled(text)


@fuzz(700)
@given(program())
def test_random_programs(text):
    assert_handled(text)


# -- (b) mutations of the real architectures ------------------------------------------------

def _mutate(text: str, ops: list[tuple[str, int, str]]) -> str:
    lines = text.split("\n")
    for op, i, extra in ops:
        i %= max(1, len(lines))
        if op == "delete" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "number" and lines:
            digits = [k for k, ch in enumerate(lines[i]) if ch.isdigit()]
            if digits:
                k = digits[len(extra) % len(digits)]
                end = k
                while end < len(lines[i]) and lines[i][end].isdigit():
                    end += 1
                lines[i] = lines[i][:k] + (extra or "0") + lines[i][end:]
        elif op == "insert" and lines:
            k = len(extra) * 7 % (len(lines[i]) + 1)
            lines[i] = lines[i][:k] + extra + lines[i][k:]
        elif op == "truncate":
            joined = "\n".join(lines)
            return joined[: i * 37 % (len(joined) + 1)]
    return "\n".join(lines)


mutation = st.tuples(
    st.sampled_from(["delete", "duplicate", "swap", "number", "number", "insert", "insert", "truncate"]),
    st.integers(0, 10_000),
    st.one_of(st.sampled_from(["0", "-1", "1000000000000", "00", "1.5", "1e9"]),
              st.text(st.characters(blacklist_categories=("Cs",)), max_size=3),
              st.sampled_from(TOKENS)),
)


@fuzz(700)
@given(st.sampled_from(sorted(TEXTS)), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_corpus(name, ops):
    assert_handled(_mutate(TEXTS[name], ops))


def test_corpus_present():
    """The mutation fuzzer needs real files to mutate."""
    assert len(TEXTS) >= 3


# -- the CLI on files ---------------------------------------------------------------------------

@fuzz(150)
@given(st.one_of(program(), token_soup,
                 st.builds(_mutate, st.sampled_from([TEXTS[n] for n in sorted(TEXTS)]),
                           st.lists(mutation, min_size=1, max_size=3))))
def test_cli_never_crashes(text):
    fd, path = tempfile.mkstemp(suffix=".arch")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        result = run_cli("check", path)
    finally:
        Path(path).unlink()
    assert result.code in (0, 1), result.err
    assert "Traceback" not in result.err
    assert (result.code == 1) == bool(result.err), result.err



# -- benchmarks/fuzz.py, the campaign fuzzer: a short fixed-seed run of each part ----------------

FUZZ = ROOT / "benchmarks" / "fuzz.py"
sys.path.insert(0, str(FUZZ.parent))


def _campaign(state: Path, *args: str, env: dict | None = None) -> tuple[dict, list[dict]]:
    """Run benchmarks/fuzz.py in a fresh process; the summed stats and findings of its journal."""
    done = subprocess.run([sys.executable, str(FUZZ), *args, "--state", str(state), "--quiet",
                           "--out", str(state / "fuzz.md")], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    import fuzz_report
    (journal,) = state.glob(f"{args[0]}-seed*.jsonl")
    batches = fuzz_report.batches(journal)
    return fuzz_report.sum_stats(batches), [f for batch in batches for f in batch["findings"]]


@pytest.mark.timeout(200)
def test_mutation_fuzzer_smoke(tmp_path):
    """200 mutated inputs, run in two chunks and once more (resumed: nothing left to do):
    every input is counted once, none crashes, none is slow, and the report says so."""
    _campaign(tmp_path, "mutate", "--count", "120", "--seed", "3")
    stats, findings = _campaign(tmp_path, "mutate", "--count", "200", "--seed", "3")
    again, _ = _campaign(tmp_path, "mutate", "--count", "200", "--seed", "3")
    assert stats["n"] == again["n"] == 200
    assert stats["accepted"] + stats["refused"] == 200 and stats["accepted"] >= 20 and stats["cli"] == 20
    assert stats["compiled"] >= 10  # accepted mutants also through to_source and ONNX emission
    assert findings == [], findings
    report = (tmp_path / "fuzz.md").read_text()
    assert "| inputs run | 200 (indices 0-199) |" in report and "| crash findings | 0 |" in report


@pytest.mark.timeout(200)
def test_backend_fuzzer_smoke(tmp_path):
    """5 random networks through torch, the generated source, the ONNX checker and onnxruntime."""
    stats, findings = _campaign(tmp_path, "backends", "--count", "5", "--seed", "3")
    assert findings == [], findings
    assert stats["n"] == 5 and stats["ran"] >= 3 and stats["ran"] + stats["refused"] == 5
    assert all(stats[f"stage {s}"] > 0 for s in ("check", "torch", "source", "onnx"))


@pytest.mark.timeout(100)
def test_fuzzer_kills_a_stuck_worker_and_goes_on(tmp_path):
    """An input that never finishes is recorded as a hang (and saved); the rest of its batch runs."""
    stats, findings = _campaign(tmp_path, "mutate", "--count", "20", "--seed", "3", "--kill", "1",
                                env={"FUZZ_STALL_AT": "7"})
    assert [(f["kind"], f["index"]) for f in findings] == [("hang", 7)]
    assert stats["n"] == 19 and stats["skipped"] == 1
    import fuzz_work
    with open(findings[0]["saved"], encoding="utf-8", newline="") as f:  # as written: "\r" kept
        assert f.read() == fuzz_work.generate("mutate", 3, 7)[0]


def test_fuzzer_classifies_crashes_and_bad_spans(monkeypatch):
    """What a worker records: an exception but CnnDslError is a crash with its type and place;
    a diagnostic pointing past the text is a finding too."""
    import fuzz_work
    from cnndsl.diagnostics import Diagnostic
    from cnndsl.source import Source, Span

    def crash(text, **_):
        return [][1]

    monkeypatch.setattr(cnndsl, "loads", crash)
    found, _ = fuzz_work._mutate("input 8x8x3\n", 5, "token", Counter())
    assert (found["kind"], found["type"], found["index"]) == ("crash", "IndexError", 5)
    assert found["key"].startswith("IndexError at ") and "test_fuzz.py" in found["where"]

    def off_the_end(text, **_):
        raise cnndsl.CnnDslError([Diagnostic(Span(Source("f", text), 1, 14, 1, 15), "col one past the end")])

    monkeypatch.setattr(cnndsl, "loads", off_the_end)
    found, _ = fuzz_work._mutate("input 8x8x3\r\n", 0, "newline", Counter())
    assert found["kind"] == "diagnostic" and "col 14 outside 1..12" in found["message"]


def test_backend_fuzzer_sees_a_wrong_number(monkeypatch):
    """onnxruntime off by 1e-3 on one value: a mismatch, not a pass."""
    import fuzz_backends  # (not its setup(): that sets torch to one thread for this whole process)
    text = "network N\ninput 8x8x3\n3x3 conv, 4\nbatch norm\nrelu\nFC 3\n"
    fuzz_backends.run(text, "ok", {})
    real = fuzz_backends._ort

    def off(model, x):
        names, results = real(model, x)
        return names, [results[0] + 1e-3, *results[1:]]

    monkeypatch.setattr(fuzz_backends, "_ort", off)
    with pytest.raises(fuzz_backends.Mismatch, match="max .difference. 0.001"):
        fuzz_backends.run(text, "off", {})


def test_reduce_keeps_the_failure(monkeypatch, tmp_path, capsys):
    """`fuzz.py reduce` shrinks an input to what still fails the same way."""
    import fuzz_reduce
    real = cnndsl.loads

    def fragile(text, **kwargs):
        if "2147483648" in text:
            raise OverflowError("int too large")
        return real(text, **kwargs)

    monkeypatch.setattr(cnndsl, "loads", fragile)
    path = tmp_path / "mutate-s1-5.arch"
    path.write_text(TEXTS["vgg16.arch"].replace("FC 1000", "FC 2147483648"), encoding="utf-8")
    assert fuzz_reduce.reduce_file(path, budget=3000) == 0
    assert (tmp_path / "mutate-s1-5.min.arch").read_text(encoding="utf-8") == "2147483648"
    assert "OverflowError at " in capsys.readouterr().out
