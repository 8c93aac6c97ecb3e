"""The vocabulary: which words make which layer, with which options.

A layer line's head (`3x3 conv`, `max pool`, `FC 4096`) is looked up in KINDS; its
options are read by `Options`, which reports any it does not know. Directives
(`network`, `input`, `activation`, `shortcut`, `residual stride on`) live here too.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Callable

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import BuildError, Env, evaluate, integer, positive_int, undefined
from cnndsl.ir.joins import PartialConv, Subsample
from cnndsl.ir.ops import (LRN, Activation, BatchNorm, Conv, Dropout, Flatten, GlobalPool, Linear, Maxout, Pool)
from cnndsl.ir.shape import MAX_DIM, Shape
from cnndsl.source import Span
from cnndsl.syntax import ast

FLAGS = frozenset({"ceil", "residual", "crop", "pad", "same", "valid"})


class Options:
    """The `, key value` options of one line; every one must be used or it is an error."""

    def __init__(self, options: tuple[ast.Option, ...], env: Env):
        self.env = env
        self.keyed: dict[str, ast.KwOption] = {}
        self.positional: list[ast.Value] = []
        for opt in options:
            if isinstance(opt, ast.PosOption):
                self.positional.append(opt.value)
            elif opt.value is None and opt.key in env.values and opt.key not in FLAGS:
                self.positional.append(ast.Var(opt.key, opt.span))
            else:
                if opt.key in self.keyed:
                    raise BuildError(opt.span, f"option '{opt.key}' is given twice")
                self.keyed[opt.key] = opt
        self.used: set[str] = set()
        self.used_positional = 0

    def flag(self, key: str) -> bool:
        opt = self.keyed.get(key)
        if opt is None:
            return False
        if opt.value is not None:
            raise BuildError(opt.span, f"'{key}' takes no value")
        self.used.add(key)
        return True

    def value(self, key: str) -> ast.KwOption | None:
        opt = self.keyed.get(key)
        if opt is not None:
            self.used.add(key)
            if opt.value is None:
                raise BuildError(opt.span, f"option '{key}' needs a value, e.g. `{key} 2`")
        return opt

    def int(self, key: str, default: int, minimum: int = 1) -> int:
        opt = self.value(key)
        return default if opt is None else positive_int(opt.value, self.env, key, minimum)

    def float(self, key: str, default: float) -> float:
        opt = self.value(key)
        return default if opt is None else evaluate(opt.value, self.env)

    def word(self, key: str, choices: tuple[str, ...]) -> str | None:
        opt = self.value(key)
        if opt is None:
            return None
        if isinstance(opt.value, ast.Var) and opt.value.name in choices:
            return opt.value.name
        raise BuildError(opt.span, f"'{key}' must be one of: {', '.join(choices)}")

    def take_positional(self) -> ast.Value | None:
        if self.used_positional < len(self.positional):
            self.used_positional += 1
            return self.positional[self.used_positional - 1]
        return None

    def finish(self, allowed: tuple[str, ...], what: str) -> None:
        for key, opt in self.keyed.items():
            if key not in self.used:
                hint = f"options of {what}: {', '.join(allowed)}" if allowed else f"{what} takes no options"
                raise BuildError(opt.span, f"unknown option '{key}' for {what}", Note(hint), *suggest(key, allowed))
        if self.used_positional < len(self.positional):
            extra = self.positional[self.used_positional]
            raise BuildError(extra.span, f"unexpected value for {what}")


def suggest(name: str, known, what: str = "") -> tuple[Note, ...]:
    """`did you mean 'x'?` for the closest known name (`max` -> `max pool`), else the list of them."""
    close = sorted(k for k in known if k.startswith(name + " ")) or difflib.get_close_matches(name, list(known), n=1)
    if close:
        return (Note(f"did you mean '{close[0]}'?"),)
    return (Note(f"{what}: {', '.join(sorted(known))}"),) if what and known else ()


# -- sizes ---------------------------------------------------------------------------------

def _per_axis(opts: Options, key: str, rank: int, default: tuple[int, ...], minimum: int = 1) -> tuple[int, ...]:
    opt = opts.value(key)
    if opt is None:
        return default
    if isinstance(opt.value, ast.SizeLit):
        dims = opt.value.dims
        if len(dims) != rank:
            raise BuildError(opt.span, f"{key} {'x'.join(map(str, dims))} has {len(dims)} axes; the kernel has {rank}")
        for d in dims:
            if d < minimum:
                raise BuildError(opt.span, f"{key} must be at least {minimum}, got {d}")
    value = dims if isinstance(opt.value, ast.SizeLit) else (positive_int(opt.value, opts.env, key, minimum),) * rank
    if max(value) > MAX_DIM:
        raise BuildError(opt.span, f"{key} {max(value):,} is absurdly large (at most {MAX_DIM:,})")
    return value


def _kernel(head: ast.Head, opts: Options, default: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    size = head.size or (head.arg if isinstance(head.arg, ast.SizeLit) else None)
    if size is None:
        opt = opts.value("kernel")
        if opt is not None:
            rank = len(opt.value.dims) if isinstance(opt.value, ast.SizeLit) else 2
            return _per_axis(Options((opt,), opts.env), "kernel", rank, (1,) * rank)
        if default is None:
            raise BuildError(head.span, f"{what} needs a kernel size, e.g. `3x3 {what}, 64`")
        return default
    if len(size.dims) > 3:
        raise BuildError(size.span, f"a {len(size.dims)}D kernel; cnndsl supports 1D, 2D and 3D")
    if min(size.dims) < 1:
        raise BuildError(size.span, "kernel sizes must be at least 1")
    if max(size.dims) > MAX_DIM:
        raise BuildError(size.span, f"kernel size {max(size.dims):,} is absurdly large (at most {MAX_DIM:,})")
    if len(size.dims) == 1:
        return size.dims
    return size.dims


def _pad(opts: Options, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    opt = opts.keyed.get("pad")
    if opt is not None and isinstance(opt.value, ast.Var) and opt.value.name in ("same", "valid"):
        opts.used.add("pad")
        if opt.value.name == "valid":
            return (0,) * len(kernel)
        for k, d in zip(kernel, dilation):
            if d * (k - 1) % 2:
                raise BuildError(opt.span, f"pad same needs an odd kernel; a {k}-wide kernel would pad unevenly")
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    default = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return _per_axis(opts, "pad", len(kernel), default, minimum=0)


def _width(head: ast.Head, opts: Options, what: str) -> int:
    expr = head.arg if head.arg is not None and not isinstance(head.arg, ast.SizeLit) else opts.take_positional()
    if expr is None:
        bare = [o for o in opts.keyed.values() if o.value is None and o.key not in FLAGS]
        if bare:  # `3x3 conv, w` with no constant w: a bare word is read as an option
            raise undefined(bare[0].key, bare[0].span, opts.env)
        raise BuildError(head.span, f"{what} needs a number of output channels, e.g. `3x3 conv, 64`")
    n = positive_int(expr, opts.env, f"the number of {what} channels")
    if n > MAX_DIM:
        raise BuildError(expr.span, f"{n:,} {what} channels is absurdly many (at most {MAX_DIM:,})")
    return n


def _bias(opts: Options, default: bool) -> bool:
    choice = opts.word("bias", ("on", "off"))
    return default if choice is None else choice == "on"


# -- layer makers --------------------------------------------------------------------------

Made = list[tuple[object, str, bool]]  # (op, kind for naming, implicit)


def _conv(head: ast.Head, opts: Options, rules: dict) -> Made:
    kernel = _kernel(head, opts, None, "conv")
    out = _width(head, opts, "conv")
    rank = len(kernel)
    stride = _per_axis(opts, "stride", rank, (1,) * rank)
    dilation = _per_axis(opts, "dilation", rank, (1,) * rank)
    pad = _pad(opts, kernel, dilation)
    groups = opts.int("groups", 1)
    table = _table(opts)
    tail = rules.get("conv", ())
    bias = _bias(opts, default=not (tail and isinstance(tail[0][0], BatchNorm)))
    opts.finish(("stride", "pad", "dilation", "groups", "bias", "table"), "conv")
    if table is not None:
        if len(table) != out:
            raise BuildError(head.span, f"the connection table has {len(table)} rows but the conv has {out} outputs")
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
    if any(not (part[:1] == "m" and part[1:].isascii() and part[1:].isdigit()) for part in parts):
        raise BuildError(opt.span, "each group of a connection table is `m` followed by input map digits, e.g. m012")
    return tuple(tuple(int(c) for c in part[1:]) for part in parts)


def _upconv(head: ast.Head, opts: Options, rules: dict) -> Made:
    kernel = _kernel(head, opts, None, "up-conv")
    out = _width(head, opts, "up-conv")
    rank = len(kernel)
    stride = _per_axis(opts, "stride", rank, kernel)
    pad = _per_axis(opts, "pad", rank, (0,) * rank, minimum=0)
    bias = _bias(opts, True)
    opts.finish(("stride", "pad", "bias"), "up-conv")
    return [(Conv(out, kernel, stride, pad, (1,) * rank, 1, bias, transposed=True), "upconv", False)]


def _pool(mode: str) -> Callable:
    def make(head: ast.Head, opts: Options, rules: dict) -> Made:
        kernel = _kernel(head, opts, (2, 2), f"{mode} pool")
        rank = len(kernel)
        stride = _per_axis(opts, "stride", rank, kernel)
        pad = _per_axis(opts, "pad", rank, (0,) * rank, minimum=0)
        ceil = opts.flag("ceil")
        opts.finish(("stride", "pad", "ceil"), f"{mode} pool")
        return [(Pool(mode, kernel, stride, pad, ceil), "maxpool" if mode == "max" else "avgpool", False)]
    return make


def _global(mode: str) -> Callable:
    def make(head: ast.Head, opts: Options, rules: dict) -> Made:
        _no_arg(head, f"global {mode} pool")
        opts.finish((), f"global {mode} pool")
        return [(GlobalPool(mode), "avgpool" if mode == "avg" else "maxpool", False)]
    return make


def _fc(head: ast.Head, opts: Options, rules: dict) -> Made:
    out = _width(head, opts, "FC")
    tail = rules.get("fc", ())
    bias = _bias(opts, default=not (tail and isinstance(tail[0][0], BatchNorm)))
    opts.finish(("bias",), "FC")
    return [(Linear(out, bias), "fc", False)] + [(step, kind, True) for step, kind in tail]


def _number_arg(head: ast.Head, opts: Options, key: str, default: float) -> float:
    if head.arg is not None:
        return evaluate(head.arg, opts.env)
    return opts.float(key, default)


def _dropout(head, opts, rules) -> Made:
    p = _number_arg(head, opts, "p", 0.5)
    if not 0 <= p < 1:
        raise BuildError(head.span, f"dropout probability must be in [0, 1), got {p:g}")
    opts.finish(("p",), "dropout")
    return [(Dropout(p), "dropout", False)]


def _bn(head, opts, rules) -> Made:
    _no_arg(head, "batch norm")
    eps = opts.float("eps", 1e-5)
    momentum = opts.float("momentum", 0.1)
    opts.finish(("eps", "momentum"), "batch norm")
    return [(BatchNorm(eps, momentum), "bn", False)]


def _lrn(head, opts, rules) -> Made:
    size = int(_number_arg(head, opts, "size", 5))
    alpha, beta, k = opts.float("alpha", 1e-4), opts.float("beta", 0.75), opts.float("k", 2.0)
    opts.finish(("size", "alpha", "beta", "k"), "LRN")
    if size < 1:
        raise BuildError(head.span, "LRN size must be at least 1")
    return [(LRN(size, alpha, beta, k), "lrn", False)]


def _act(fn: str, default: float | None = None) -> Callable:
    def make(head, opts, rules) -> Made:
        alpha = None
        if default is not None:
            alpha = _number_arg(head, opts, "slope" if fn == "leaky_relu" else "alpha", default)
        else:
            _no_arg(head, fn)
        opts.finish(("slope",) if fn == "leaky_relu" else ("alpha",) if default is not None else (), fn.replace("_", " "))
        return [(Activation(fn, alpha), fn, False)]
    return make


def _maxout(head, opts, rules) -> Made:
    pieces = int(_number_arg(head, opts, "pieces", 2))
    opts.finish(("pieces",), "maxout")
    if pieces < 1:
        raise BuildError(head.span, "maxout needs at least 1 piece")
    return [(Maxout(pieces), "maxout", False)]


def _flatten(head, opts, rules) -> Made:
    _no_arg(head, "flatten")
    opts.finish((), "flatten")
    return [(Flatten(), "flatten", False)]


def _subsample(head, opts, rules) -> Made:
    kernel = _kernel(head, opts, (2, 2), "subsample")
    opts.finish((), "subsample")
    return [(Subsample(kernel), "subsample", False)]


def _no_arg(head: ast.Head, what: str) -> None:
    if head.arg is not None:
        raise BuildError(head.arg.span, f"{what} takes no number here")


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


def _lookup(words: tuple[str, ...], span: Span) -> Callable:
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
    op = _lookup(step.words, step.span)(head, Options(step.options, env), {})[0][0]
    if not isinstance(op, (BatchNorm, Activation, Dropout, LRN)):
        raise BuildError(step.span, f"a rule can add batch norm, activations, dropout or LRN after a layer, "
                                    f"not '{' '.join(step.words)}'")
    return op, _kind_name(step.words)


def make(head: ast.Head, options: tuple[ast.Option, ...], env: Env, rules: dict) -> Made:
    """The ops one layer line makes (a conv under a rule makes conv, BN, ReLU)."""
    key = tuple(w.lower() for w in head.words)
    if key not in KINDS and key[:-1] in KINDS and head.arg is None:  # `FC k`: the last word is a constant
        head = replace(head, words=head.words[:-1], arg=ast.Var(head.words[-1], head.span))
    return _lookup(head.words, head.span)(head, Options(options, env), rules)


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


# -- directives ----------------------------------------------------------------------------

DIRECTIVES = ("network", "input", "activation", "shortcut", "residual")


def directive(line: ast.Line) -> bool:
    unit = line.unit
    return isinstance(unit, ast.Head) and unit.size is None and unit.words[0] in DIRECTIVES and line.label is None


def apply_directive(line: ast.Line, settings, env: Env) -> None:
    head: ast.Head = line.unit
    word, rest = head.words[0], head.words[1:]
    if word == "network":
        if len(rest) != 1 or line.options or head.arg is not None:
            raise BuildError(head.span, "write the network's name as one word: `network VGG16`")
        settings.name = rest[0]
    elif word == "input":
        settings.input, settings.input_span = input_shape(head, env), head.span
    elif word == "activation":
        _activation(head, settings, env)
    elif word == "shortcut":
        if rest not in (("projection",), ("zero-pad",)):
            raise BuildError(head.span, "shortcut must be `shortcut projection` (option B) or `shortcut zero-pad` (option A)")
        settings.shortcut = rest[0]
    elif word == "residual":
        on = "3x3" if rest == ("stride", "on") and isinstance(head.arg, ast.SizeLit) else \
            "first" if rest == ("stride", "on", "first") else None
        if on is None:
            raise BuildError(head.span, "write `residual stride on 3x3` (torchvision) or `residual stride on first` (the paper)")
        settings.stride_on = on


def _activation(head: ast.Head, settings, env: Env) -> None:
    words = head.words[1:]
    if words == ("none",):
        settings.activation = None
        return
    op = _lookup(words, head.span)(ast.Head(None, words, head.arg, head.span), Options((), env), {})[0][0]
    if not isinstance(op, Activation) or op.fn == "softmax":
        raise BuildError(head.span, f"`activation` takes relu, leaky relu, elu, tanh or sigmoid, not '{' '.join(words)}'")
    settings.activation = (op.fn, op.alpha)


def input_shape(head: ast.Head, env: Env) -> Shape:
    """`input 224x224x3` (HxWxC), `input 56x300` (1D: length x channels), `input 16x112x112x3`, `input 784`."""
    arg = head.arg
    if arg is None or len(head.words) != 1:
        raise BuildError(head.span, "write the input size as HxWxC, e.g. `input 224x224x3`")
    dims = arg.dims if isinstance(arg, ast.SizeLit) else (integer(arg, env, "input size"),)
    if len(dims) > 4:
        raise BuildError(arg.span, f"input has {len(dims)} dimensions; at most 4 (DxHxWxC)")
    for d in dims:
        if d < 1:
            raise BuildError(arg.span, f"input sizes must be at least 1, got {d}")
        if d > MAX_DIM:
            raise BuildError(arg.span, f"input size {d:,} is absurd (at most {MAX_DIM:,})")
    return Shape(dims[-1], tuple(dims[:-1]))
