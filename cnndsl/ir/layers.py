"""The vocabulary: which words make which layer, with which options.

A layer line's head (`3x3 conv`, `max pool`, `FC 4096`) is looked up in KINDS; its options
are read by cnndsl.ir.options.Options, which reports any it does not know. Network-level
lines (`network`, `input`, `activation`, ...) are in cnndsl.ir.directives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import BuildError, Env
from cnndsl.ir.joins import PartialConv, Subsample
from cnndsl.ir.ops import LRN, Activation, BatchNorm, Conv, Dropout, Flatten, GlobalPool, Linear, Maxout, Pool
from cnndsl.ir.options import (Options, bias_flag, kernel_size, no_arg, number_arg, padding, per_axis, suggest,
                               width)
from cnndsl.ir.shape import axes_text
from cnndsl.source import Span
from cnndsl.syntax import ast

# -- layer makers --------------------------------------------------------------------------

Made = list[tuple[object, str, bool]]  # (op, kind for naming, implicit)


def _conv(head: ast.Head, opts: Options, rules: dict) -> Made:
    """`3x3 conv, 64`: stride 1 and, by default, "same" padding, d*(F-1)/2 on each side; a kernel
    whose dilated extent is even has no centre, so it must say its `pad` (no silent F-1 output)."""
    kernel = kernel_size(head, opts, None, "conv")
    out = width(head, opts, "conv")
    rank = len(kernel)
    stride = per_axis(opts, "stride", rank, (1,) * rank)
    dilation = per_axis(opts, "dilation", rank, (1,) * rank)
    _no_even_default(head, opts, kernel, dilation)
    pad = padding(opts, kernel, dilation)
    groups = opts.int("groups", 1)
    table = _table(opts)
    tail = rules.get("conv", ())
    bias = bias_flag(opts, default=not (tail and isinstance(tail[0][0], BatchNorm)))
    opts.finish(("stride", "pad", "dilation", "groups", "bias", "table"), "conv")
    if table is not None:
        if len(table) != out:
            raise BuildError(head.span, f"the connection table has {len(table)} rows but the conv has {out} outputs")
        _table_plain(head, opts, {"stride": stride, "dilation": dilation, "groups": (groups,), "pad": pad}, bias)
        op = PartialConv(table, kernel)
    else:
        op = Conv(out, kernel, stride, pad, dilation, groups, bias)
    return [(op, "conv", False)] + [(step, kind, True) for step, kind in tail]


def _table(opts: Options) -> tuple[tuple[int, ...], ...] | None:
    """`table 012-123-234-...`: output map j reads the input maps whose digits form the j-th group."""
    opt = opts.keyed.get("table")
    if opt is None:
        return None
    opts.used.add("table")
    text = opt.value.name if isinstance(opt.value, ast.Var) else None
    if not text or not text.startswith("m"):
        raise BuildError(opt.span, "write a connection table as `table m012-m123-...`: one group of input map digits per output map")
    parts = text.split("-")
    for j, part in enumerate(parts):
        if not (part[:1] == "m" and part[1:].isascii() and part[1:].isdigit()):
            raise BuildError(_group_span(opt, parts, j),
                             "each group of a connection table is `m` followed by input map digits, e.g. m012")
        twice = next((c for i, c in enumerate(part[1:]) if c in part[1:i + 1]), None)
        if twice is not None:  # torch would add the map's two kernels, ONNX's dense kernel keep one
            once = "m" + "".join(dict.fromkeys(part[1:]))
            raise BuildError(_group_span(opt, parts, j),
                             f"group {j} of the connection table (output map {j}) lists input map {twice} twice",
                             Note(f"an output map reads each input map once; fix: write `{once}`"))
    return tuple(tuple(int(c) for c in part[1:]) for part in parts)


def _group_span(opt: ast.KwOption, parts: list[str], j: int) -> Span:
    """The span of group j of `table m012-m123-...`, or the option's when the text moved."""
    span = opt.value.span
    if span.line != span.end_line or span.end_col - span.col != len("-".join(parts)):
        return opt.span
    col = span.col + sum(len(part) + 1 for part in parts[:j])
    return Span(span.source, span.line, col, span.line, col + len(parts[j]))


def _table_plain(head: ast.Head, opts: Options, given: dict[str, tuple[int, ...]], bias: bool) -> None:
    """A conv with a connection table (LeNet-5's C3) slides with stride 1, no padding, no
    dilation, with one bias per map: refuse options that would be silently dropped."""
    for key in ("stride", "dilation", "groups"):
        if set(given[key]) != {1}:
            raise BuildError(opts.keyed[key].span, f"a conv with a connection table takes no `{key}`")
    if any(given["pad"]):
        raise BuildError(opts.keyed["pad"].span if "pad" in opts.keyed else head.span,
                         "a conv with a connection table does not pad (LeNet-5's C3 does not)", Note("fix: write `pad valid`"))
    if not bias and "bias" in opts.keyed:  # (a batch norm rule's bias-off default does not apply)
        raise BuildError(opts.keyed["bias"].span, "a conv with a connection table always has a bias per output map")


def _no_even_default(head: ast.Head, opts: Options, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> None:
    """An even kernel has no centre: no symmetric padding keeps the size ("same" would pad one
    side more), so rather than silently shrink by one, ask for the padding."""
    if "pad" in opts.keyed or "table" in opts.keyed or not any(d * (k - 1) % 2 for k, d in zip(kernel, dilation)):
        return
    size = "x".join(map(str, kernel)) + ("" if set(dilation) == {1} else f" (dilation {'x'.join(map(str, dilation))})")
    less = axes_text([d * (k - 1) // 2 for k, d in zip(kernel, dilation)])
    more = axes_text([-(-d * (k - 1) // 2) for k, d in zip(kernel, dilation)])
    raise BuildError(head.size.span if head.size is not None else head.span,
                     f"a {size} conv has no centre, so no padding keeps the size (\"same\" would pad one side more "
                     "than the other); say which padding you want",
                     Note(f"fix: add `, pad {less}` (the output one smaller than the input), `, pad {more}` "
                          "(one larger), or `, pad valid` (none)"))


def _upconv(head: ast.Head, opts: Options, rules: dict) -> Made:
    kernel = kernel_size(head, opts, None, "up-conv")
    out = width(head, opts, "up-conv")
    rank = len(kernel)
    stride = per_axis(opts, "stride", rank, kernel)
    pad = per_axis(opts, "pad", rank, (0,) * rank, minimum=0)
    bias = bias_flag(opts, True)
    opts.finish(("stride", "pad", "bias"), "up-conv")
    return [(Conv(out, kernel, stride, pad, (1,) * rank, 1, bias, transposed=True), "upconv", False)]


def _pool(mode: str) -> Callable:
    def make(head: ast.Head, opts: Options, rules: dict) -> Made:
        kernel = kernel_size(head, opts, (2, 2), f"{mode} pool")
        rank = len(kernel)
        stride = per_axis(opts, "stride", rank, kernel)
        pad = per_axis(opts, "pad", rank, (0,) * rank, minimum=0)
        ceil = opts.flag("ceil")
        opts.finish(("stride", "pad", "ceil"), f"{mode} pool")
        return [(Pool(mode, kernel, stride, pad, ceil), "maxpool" if mode == "max" else "avgpool", False)]
    return make


def _global(mode: str) -> Callable:
    def make(head: ast.Head, opts: Options, rules: dict) -> Made:
        no_arg(head, f"global {mode} pool")
        opts.finish((), f"global {mode} pool")
        return [(GlobalPool(mode), "avgpool" if mode == "avg" else "maxpool", False)]
    return make


def _fc(head: ast.Head, opts: Options, rules: dict) -> Made:
    out = width(head, opts, "FC")
    tail = rules.get("fc", ())
    bias = bias_flag(opts, default=not (tail and isinstance(tail[0][0], BatchNorm)))
    opts.finish(("bias",), "FC")
    return [(Linear(out, bias), "fc", False)] + [(step, kind, True) for step, kind in tail]

def _dropout(head, opts, rules) -> Made:
    p = number_arg(head, opts, "p", 0.5)
    if not 0 <= p < 1:
        raise BuildError(head.span, f"dropout probability must be in [0, 1), got {p:g}")
    opts.finish(("p",), "dropout")
    return [(Dropout(p), "dropout", False)]


def _bn(head, opts, rules) -> Made:
    no_arg(head, "batch norm")
    eps = opts.float("eps", 1e-5)
    momentum = opts.float("momentum", 0.1)
    opts.finish(("eps", "momentum"), "batch norm")
    return [(BatchNorm(eps, momentum), "bn", False)]


def _lrn(head, opts, rules) -> Made:
    size = int(number_arg(head, opts, "size", 5))
    alpha, beta, k = opts.float("alpha", 1e-4), opts.float("beta", 0.75), opts.float("k", 2.0)
    opts.finish(("size", "alpha", "beta", "k"), "LRN")
    if size < 1:
        raise BuildError(head.span, "LRN size must be at least 1")
    if size % 2 == 0:  # so that the checker accepts only what every backend runs exactly
        raise BuildError(head.span, f"LRN {size} has no centre channel: ONNX centres an even window one channel "
                                    "away from PyTorch's LocalResponseNorm", Note(f"fix: use an odd size, e.g. LRN {size + 1}"))
    return [(LRN(size, alpha, beta, k), "lrn", False)]


def _act(fn: str, default: float | None = None) -> Callable:
    def make(head, opts, rules) -> Made:
        alpha = None
        if default is not None:
            alpha = number_arg(head, opts, "slope" if fn == "leaky_relu" else "alpha", default)
        else:
            no_arg(head, fn)
        opts.finish(("slope",) if fn == "leaky_relu" else ("alpha",) if default is not None else (), fn.replace("_", " "))
        return [(Activation(fn, alpha), fn, False)]
    return make


def _maxout(head, opts, rules) -> Made:
    pieces = int(number_arg(head, opts, "pieces", 2))
    opts.finish(("pieces",), "maxout")
    if pieces < 1:
        raise BuildError(head.span, "maxout needs at least 1 piece")
    return [(Maxout(pieces), "maxout", False)]


def _flatten(head, opts, rules) -> Made:
    no_arg(head, "flatten")
    opts.finish((), "flatten")
    return [(Flatten(), "flatten", False)]


def _subsample(head, opts, rules) -> Made:
    kernel = kernel_size(head, opts, (2, 2), "subsample")
    opts.finish((), "subsample")
    return [(Subsample(kernel), "subsample", False)]

KINDS: dict[tuple[str, ...], Callable] = {
    ("conv",): _conv, ("convolution",): _conv,
    ("up-conv",): _upconv, ("upconv",): _upconv, ("deconv",): _upconv, ("transposed", "conv"): _upconv,
    ("max", "pool"): _pool("max"), ("maxpool",): _pool("max"), ("pool",): _pool("max"),
    ("avg", "pool"): _pool("avg"), ("average", "pool"): _pool("avg"), ("avgpool",): _pool("avg"),
    ("global", "average", "pool"): _global("avg"), ("global", "avg", "pool"): _global("avg"),
    ("global", "max", "pool"): _global("max"), ("max-over-time", "pool"): _global("max"),
    ("max-over-time", "pooling"): _global("max"),
    ("fc",): _fc, ("fully", "connected"): _fc, ("linear",): _fc,
    ("flatten",): _flatten, ("dropout",): _dropout,
    ("batch", "norm"): _bn, ("batchnorm",): _bn, ("bn",): _bn,
    ("lrn",): _lrn, ("local", "response", "norm"): _lrn,
    ("relu",): _act("relu"), ("leaky", "relu"): _act("leaky_relu", 0.01), ("elu",): _act("elu", 1.0),
    ("tanh",): _act("tanh"), ("sigmoid",): _act("sigmoid"), ("softmax",): _act("softmax"),
    ("maxout",): _maxout, ("subsample",): _subsample, ("subsampling",): _subsample,
}

_NAMES = {("batch", "norm"): "bn", ("batchnorm",): "bn", ("leaky", "relu"): "leaky_relu", ("lrn",): "lrn"}


def _kind_name(words: tuple[str, ...]) -> str:
    words = tuple(w.lower() for w in words)
    return _NAMES.get(words, "_".join(words).replace("-", "_"))


def lookup(words: tuple[str, ...], span: Span) -> Callable:
    key = tuple(w.lower() for w in words)
    maker = KINDS.get(key)
    if maker is None:
        text = " ".join(words)
        close = suggest(text.lower(), [" ".join(k) for k in KINDS])  # every spelling, aliases too
        raise BuildError(span, f"unknown layer '{text}'", *close or (Note(f"known layers: {LAYER_NAMES}"),))
    return maker


LAYER_NAMES = ("conv, up-conv, max pool, average pool, global average pool, FC, flatten, dropout, batch norm, LRN, "
               "relu, leaky relu, elu, tanh, sigmoid, softmax, maxout, subsample")


def rule_step(step: ast.RuleStep, env: Env) -> tuple[object, str]:
    """One step of a rule such as `batch norm, eps 0.001` or `relu`: (op, kind name)."""
    head = ast.Head(None, step.words, None, step.span)
    op = lookup(step.words, step.span)(head, Options(step.options, env), {})[0][0]
    if not isinstance(op, (BatchNorm, Activation, Dropout, LRN)):
        raise BuildError(step.span, f"a rule can add batch norm, activations, dropout or LRN after a layer, "
                                    f"not '{' '.join(step.words)}'")
    return op, _kind_name(step.words)


def make(head: ast.Head, options: tuple[ast.Option, ...], env: Env, rules: dict) -> Made:
    """The ops one layer line makes (a conv under a rule makes conv, BN, ReLU)."""
    key = tuple(w.lower() for w in head.words)
    if key not in KINDS and key[:-1] in KINDS and head.arg is None:  # `FC k`: the last word is a constant
        head = replace(head, words=head.words[:-1], arg=ast.Var(head.words[-1], head.span))
    return lookup(head.words, head.span)(head, Options(options, env), rules)


# -- structure helpers used by the builder --------------------------------------------------

def skip_reference(unit: ast.Head) -> tuple[str, str, ast.Head] | None:
    """`concat c4, crop` / `add c4`: a join with an earlier named layer."""
    if unit.size is None and len(unit.words) == 2 and unit.words[0] in ("concat", "add") and unit.arg is None:
        return unit.words[0], unit.words[1], unit
    return None


def is_identity(line: ast.Line) -> bool:
    return isinstance(line.unit, ast.Head) and line.unit.words == ("identity",) and not line.options


def _is_conv(line: ast.Statement) -> bool:
    return isinstance(line, ast.Line) and isinstance(line.unit, ast.Head) and \
        tuple(w.lower() for w in line.unit.words) in (("conv",), ("convolution",))


def stride_target(lines: tuple[ast.Line, ...], stride_on: str) -> int:
    """Which line of a group takes the group's stride: the first conv wider than 1x1
    (torchvision's v1.5), or the first conv (the paper's). -1 if none."""
    convs = [i for i, line in enumerate(lines) if _is_conv(line)]
    if stride_on == "3x3":
        wide = [i for i in convs if lines[i].unit.size and max(lines[i].unit.size.dims) > 1]
        convs = wide or convs
    if convs:
        return convs[0]
    calls = [i for i, line in enumerate(lines) if isinstance(line, ast.Line) and not isinstance(line.unit, ast.Head)]
    return calls[0] if calls else -1


def with_stride(line: ast.Line, stride: int) -> ast.Line:
    """The same line with `stride N` set (replacing any stride it had)."""
    kept = tuple(o for o in line.options if not (isinstance(o, ast.KwOption) and o.key == "stride"))
    new = ast.KwOption("stride", ast.Num(stride, line.span), line.span)
    return replace(line, options=kept + (new,))
