"""Options of a layer line (`, stride 2`, `, pad same`, `, 64`) and the size helpers the
layer makers share. Every option must be used, or it is reported with its span."""

from __future__ import annotations

import difflib

from cnndsl.diagnostics import Note
from cnndsl.ir.expr import BuildError, Env, evaluate, positive_int, undefined
from cnndsl.ir.shape import MAX_DIM
from cnndsl.syntax import ast

FLAGS = frozenset({"ceil", "residual", "crop", "pad", "same", "valid"})
MAX_OPTIONS = 64  # on one line; no layer takes more than a handful


class Options:
    """The `, key value` options of one line; every one must be used or it is an error."""

    def __init__(self, options: tuple[ast.Option, ...], env: Env):
        self.env = env
        if len(options) > MAX_OPTIONS:
            raise BuildError(options[MAX_OPTIONS].span, f"a line may have at most {MAX_OPTIONS} options; "
                             f"this one has {len(options):,}")
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

def per_axis(opts: Options, key: str, rank: int, default: tuple[int, ...], minimum: int = 1) -> tuple[int, ...]:
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


def kernel_size(head: ast.Head, opts: Options, default: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    size = head.size or (head.arg if isinstance(head.arg, ast.SizeLit) else None)
    if size is None:
        opt = opts.value("kernel")
        if opt is not None:
            rank = len(opt.value.dims) if isinstance(opt.value, ast.SizeLit) else 2
            return per_axis(Options((opt,), opts.env), "kernel", rank, (1,) * rank)
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


def padding(opts: Options, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
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
    return per_axis(opts, "pad", len(kernel), default, minimum=0)


def width(head: ast.Head, opts: Options, what: str) -> int:
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


def bias_flag(opts: Options, default: bool) -> bool:
    choice = opts.word("bias", ("on", "off"))
    return default if choice is None else choice == "on"


def number_arg(head: ast.Head, opts: Options, key: str, default: float) -> float:
    if head.arg is not None:
        return evaluate(head.arg, opts.env)
    return opts.float(key, default)

def no_arg(head: ast.Head, what: str) -> None:
    if head.arg is not None:
        raise BuildError(head.arg.span, f"{what} takes no number here")
