"""Part (b) of benchmarks/fuzz.py: random valid networks through every backend.

`network(seed, index)` writes a small random .arch file (stdlib only) from a grammar of
layers: convs (kernel, stride, pad, groups, dilation, bias, connection tables), up-convs,
pools, FC, batch norm, activations, dropout, LRN, maxout, subsample, concat/add branches,
residual groups, labels with skips, blocks and constants, on 1D, 2D and 3D inputs. It tracks
sizes roughly, so most of them check; what the checker refuses is discarded and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ACTIVATIONS = ["relu", "tanh", "sigmoid", "elu", "leaky relu 0.2", "relu", "elu, alpha 0.5"]


@dataclass
class State:
    """What the generator believes the current value is: channels and spatial sizes."""

    rng: random.Random
    dims: int
    channels: int
    spatial: list[int]
    labels: list[tuple[str, int, tuple[int, ...]]] = field(default_factory=list)
    features: set[str] = field(default_factory=set)

    def size(self, k: int | list[int]) -> str:
        ks = k if isinstance(k, list) else [k] * self.dims
        return "x".join(map(str, ks))

    def kernel(self, choices=(1, 2, 3, 3, 5)) -> int:
        fits = [k for k in choices if k <= min(self.spatial)] or [1]
        return self.rng.choice(fits)


def network(seed: int, index: int) -> tuple[str, str]:
    """Network number `index` of the campaign `seed`: (.arch text, the features it uses)."""
    rng = random.Random(f"backends:{seed}:{index}")
    dims = rng.choice((1, 2, 2, 2, 3))
    spatial = [rng.randrange(4, 10) if dims == 3 else rng.randrange(4, 25 if dims == 2 else 65)
               for _ in range(dims)]
    if dims == 2 and rng.randrange(2):
        spatial[1] = spatial[0]
    s = State(rng, dims, rng.randrange(1, 7), spatial)
    lines = [f"network Fuzz{index}", "input " + "x".join(map(str, (*spatial, s.channels)))]
    lines += _directives(s)
    for _ in range(rng.randrange(2, 9)):
        lines.append(_line(s, depth=0))
    if rng.randrange(3) == 0:
        lines += ["flatten"] * (rng.randrange(3) == 0)
        lines.append(f"FC {rng.randrange(1, 33)}" + ", bias off" * (rng.randrange(4) == 0))
        s.features.add("fc")
    if rng.randrange(4) == 0:
        lines.append("softmax")
    return "\n".join(lines) + "\n", " ".join(sorted(s.features | {f"{dims}d"}))


def _directives(s: State) -> list[str]:
    rng, out = s.rng, []
    if rng.randrange(2):
        out.append("activation " + rng.choice(ACTIVATIONS + ["none"]))
    if rng.randrange(4) == 0:
        out.append(rng.choice(["conv = conv -> batch norm -> relu", "conv = conv -> batch norm, eps 0.001 -> relu",
                               "conv = conv -> relu -> dropout", "fc = fc -> relu"]))
        s.features.add("rule")
    if rng.randrange(4) == 0:
        out.append("shortcut " + rng.choice(["projection", "zero-pad"]))
    if rng.randrange(6) == 0:
        out.append("residual stride on " + rng.choice(["first", "3x3"]))
    if rng.randrange(4) == 0:
        out += ["block unit(w) {", "  3x3 conv, w" if s.dims == 2 else f"  {s.size(3)} conv, w", "  batch norm",
                "  " + rng.choice(ACTIVATIONS), "}"]
        s.features.add("block")
    if rng.randrange(4) == 0:
        out.append(f"let k = {rng.randrange(1, 5)}")
        s.features.add("let")
    return out


def _line(s: State, depth: int) -> str:
    rng = s.rng
    kinds = ["conv"] * 6 + ["pool", "bn", "act", "act", "dropout", "lrn", "maxout", "upconv"]
    if depth < 2:
        kinds += ["group", "residual", "concat", "add", "skip"]
    if "block" in s.features and depth < 2:
        kinds += ["call"]
    if s.dims == 2:
        kinds += ["table", "subsample"]
    kind = rng.choice(kinds)
    s.features.add(kind)
    label = ""
    if depth == 0 and rng.randrange(5) == 0 and kind not in ("skip",):
        label = rng.choice([f"l{len(s.labels)}"] * 3 + [f"conv{rng.randrange(1, 4)}", "fc1", "relu1", "maxpool1"])
    text = GENERATORS[kind](s, depth)
    if label:
        s.labels.append((label, s.channels, tuple(s.spatial)))
        return f"{label}: {text}"
    return text


def _out(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _stride(s: State, k: int, pad: int, dilation: int, choices: tuple[int, ...]) -> int:
    """A stride from `choices` whose windows tile every dimension exactly (else 1)."""
    spans = [n + 2 * pad - dilation * (k - 1) - 1 for n in s.spatial]
    return s.rng.choice([t for t in choices if all(x >= 0 and x % t == 0 for x in spans)] or [1])


def _conv(s: State, depth: int) -> str:
    rng = s.rng
    if s.dims > 1 and rng.randrange(4) == 0:
        return _conv_axes(s)
    k, dilation = s.kernel(), rng.choice((1, 1, 1, 2))
    groups = rng.choice([g for g in (1, 1, 1, 2, 3, 4) if s.channels % g == 0])
    width = groups * rng.randrange(1, 9 if groups == 1 else 5)
    parts = [f"{s.size(k)} conv", str(width)]
    pad = (k - 1) // 2 * dilation
    if rng.randrange(2) or k % 2 == 0:  # an even kernel has no "same" padding: say which
        choice = rng.choice(["same" if k % 2 else "valid", "valid", 0, 1, 2])
        pad = {"same": pad, "valid": 0}.get(choice, choice) if isinstance(choice, str) else choice
        parts.append(f"pad {choice}")
    stride = _stride(s, k, pad, dilation, (1, 1, 1, 2, 3))
    if stride > 1:
        parts.append(f"stride {stride}")
    if dilation > 1:
        parts.append(f"dilation {dilation}")
    if groups > 1:
        parts.append(f"groups {groups}")
    if rng.randrange(6) == 0:
        parts.append("bias off")
    s.spatial = [max(1, _out(n, k, stride, pad, dilation)) for n in s.spatial]
    s.channels = width
    return ", ".join(parts)


def _conv_axes(s: State) -> str:
    """A conv with a kernel, padding and stride per axis: `1x3 conv, 8, pad 0x1, stride 2x1`."""
    rng = s.rng
    ks = [rng.choice([k for k in (1, 2, 3) if k <= n] or [1]) for n in s.spatial]
    pads = [rng.choice((0, k // 2)) for k in ks]
    strides = [rng.choice([t for t in (1, 1, 2, 3) if (n + 2 * p - k) % t == 0] or [1])
               for n, k, p in zip(s.spatial, ks, pads)]
    width = rng.randrange(1, 9)
    s.spatial = [(n + 2 * p - k) // t + 1 for n, k, p, t in zip(s.spatial, ks, pads, strides)]
    s.channels = width
    return f"{s.size(ks)} conv, {width}, pad {s.size(pads)}, stride {s.size(strides)}"


def _table(s: State, depth: int) -> str:
    rng = s.rng
    if s.channels > 10:
        return _conv(s, depth)
    k = s.kernel((1, 3, 5))
    groups = []
    for _ in range(rng.randrange(1, 7)):
        maps = sorted(rng.sample(range(s.channels), rng.randrange(1, s.channels + 1)))
        if rng.randrange(10) == 0:
            maps.append(rng.choice(maps))  # a map named twice
        groups.append("m" + "".join(map(str, maps)))
    s.channels = len(groups)
    s.spatial = [n - k + 1 for n in s.spatial]  # a table conv does not pad
    return f"{s.size(k)} conv, {len(groups)}" + (", pad valid" if k > 1 else "") + f", table {'-'.join(groups)}"


def _upconv(s: State, depth: int) -> str:
    k = s.rng.choice((1, 2, 2, 3))
    width = s.rng.randrange(1, 9)
    if max(s.spatial) * k > 64:
        return _act(s, depth)
    if s.rng.randrange(2):
        s.spatial, s.channels = [n * k for n in s.spatial], width
        return f"{s.size(k)} up-conv, {width}"
    stride, pad = s.rng.choice((1, 2, 3)), s.rng.choice((0, 1))
    s.spatial, s.channels = [(n - 1) * stride - 2 * pad + k for n in s.spatial], width
    return f"{s.size(k)} up-conv, {width}, stride {stride}" + (f", pad {pad}" if pad else "")


def _pool(s: State, depth: int) -> str:
    rng = s.rng
    kind = rng.choice(["max", "average", "max", "avg"])
    if rng.randrange(6) == 0 or min(s.spatial) < 2:
        s.spatial = [1] * s.dims
        return rng.choice([f"global {kind if kind != 'avg' else 'average'} pool", "global max pool"])
    if rng.randrange(3) == 0 and s.dims == 2 and all(n % 2 == 0 for n in s.spatial):
        s.spatial = [n // 2 for n in s.spatial]
        return f"{kind} pool"
    k = s.kernel((2, 3))
    pad, ceil = rng.choice((0, 0, k // 2)), rng.randrange(3) == 0
    stride = rng.choice((1, 2, k)) if ceil else _stride(s, k, pad, 1, (1, 2, k))
    parts = [f"{s.size(k)} {kind} pool", f"stride {stride}"] + ([f"pad {pad}"] if pad else []) + (["ceil"] if ceil else [])
    s.spatial = [max(1, _out(n, k, stride, pad)) for n in s.spatial]
    return ", ".join(parts)


def _bn(s: State, depth: int) -> str:
    return s.rng.choice(["batch norm", "batch norm, eps 0.001"])


def _act(s: State, depth: int) -> str:
    return s.rng.choice(ACTIVATIONS + ["softmax"])


def _dropout(s: State, depth: int) -> str:
    return s.rng.choice(["dropout 0.5", "dropout 0.1", "dropout"])


def _lrn(s: State, depth: int) -> str:
    return s.rng.choice(["LRN 3", "LRN 5, alpha 0.0001, beta 0.75, k 2", "LRN 1"])


def _maxout(s: State, depth: int) -> str:
    pieces = s.rng.choice([p for p in (1, 2, 3, 4) if s.channels % p == 0])
    s.channels //= pieces
    return f"maxout {pieces}"


def _subsample(s: State, depth: int) -> str:
    if min(s.spatial) < 2 or any(n % 2 for n in s.spatial):
        return _bn(s, depth)
    s.spatial = [n // 2 for n in s.spatial]
    return "subsample 2x2"


def _group(s: State, depth: int) -> str:
    inner = [_line(s, depth + 1) for _ in range(s.rng.randrange(1, 4))]
    repeat = s.rng.choice(["", "", " x 2", " x 3"])
    if repeat:  # the repeated body must map its output back to its input: keep it size-preserving
        return "[" + "; ".join(_keeping(s) for _ in inner) + "]" + repeat
    return "[" + "; ".join(inner) + "]"


def _keeping(s: State) -> str:
    """A layer that keeps channels and sizes."""
    k = s.kernel((1, 3))
    return s.rng.choice([f"{s.size(k)} conv, {s.channels}", "batch norm", "relu", "tanh", "dropout 0.2",
                         f"{s.size(k)} conv, {s.channels}, groups {s.channels}"])


def _residual(s: State, depth: int) -> str:
    rng = s.rng
    width = rng.randrange(1, 9)
    k = s.kernel((1, 3))
    body = [f"{s.size(k)}, {width}" if s.dims > 1 else f"{k} conv, {width}" for _ in range(rng.randrange(1, 4))]
    stride = rng.choice(["", "", ", stride 2"]) if min(s.spatial) >= 2 else ""
    repeat = rng.choice(["", " x 2"])
    s.channels = width
    if stride:
        s.spatial = [(n + 1) // 2 for n in s.spatial]
    return "[" + "; ".join(body) + "]" + repeat + ", residual" + stride


def _branches(s: State, same_width: bool) -> tuple[list[str], int]:
    rng, out = s.rng, []
    width = rng.randrange(1, 9) if not same_width or rng.randrange(2) else s.channels
    for _ in range(rng.randrange(1, 4)):
        k = s.kernel((1, 3))
        w = width if same_width else rng.randrange(1, 9)
        out.append(rng.choice([f"{s.size(k)} conv, {w}", f"[{s.size(1)} conv, {w}; {s.size(k)} conv, {w}]",
                               "identity" if w == s.channels else f"{s.size(1)} conv, {w}",
            f"[{s.size(3)} max pool, stride 1, pad 1; {s.size(1)} conv, {w}]" if min(s.spatial) >= 3 else
            f"{s.size(1)} conv, {w}"]))
    return out, width


def _concat(s: State, depth: int) -> str:
    branches, _ = _branches(s, same_width=False)
    s.channels = sum(s.channels if b == "identity" else int(b.rsplit(" ", 1)[-1].rstrip("]")) for b in branches)
    return "concat {\n  " + "\n  ".join(branches) + "\n}"


def _add(s: State, depth: int) -> str:
    branches, width = _branches(s, same_width=True)
    s.channels = width
    return "add {\n  " + "\n  ".join(branches) + "\n}"


def _skip(s: State, depth: int) -> str:
    if not s.labels:
        return _conv(s, depth)
    name, channels, spatial = s.rng.choice(s.labels)
    if s.rng.randrange(2) and channels == s.channels:
        return f"add {name}" + (", " + s.rng.choice(["crop", "pad"]) if tuple(s.spatial) != spatial else "")
    s.channels += channels
    return f"concat {name}" + (", " + s.rng.choice(["crop", "pad"]) if tuple(s.spatial) != spatial else "")


def _call(s: State, depth: int) -> str:
    width = s.rng.choice(["4", "8", "2*k" if "let" in s.features else "6"])
    s.channels = {"2*k": s.channels}.get(width, int(width) if width.isdigit() else s.channels)
    return f"unit({width})" + s.rng.choice(["", "", " x 2, residual"])


GENERATORS = {"conv": _conv, "table": _table, "upconv": _upconv, "pool": _pool, "bn": _bn, "act": _act,
              "dropout": _dropout, "lrn": _lrn, "maxout": _maxout, "subsample": _subsample, "group": _group,
              "residual": _residual, "concat": _concat, "add": _add, "skip": _skip, "call": _call}
