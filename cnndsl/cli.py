"""The command line: the only module that prints or exits.

Exit codes: 0 clean, 1 diagnostics in the input, 2 usage errors (bad flags, missing
files), 3 an internal error (a bug in cnndsl: reported in one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from cnndsl.diagnostics import CnnDslError

CONVENTIONS = """\
counting conventions:
  params       weights and biases (BN: scale counted as a weight, shift as a bias); the
               "weights" figure is the slides' column, without biases
  MACs         conv: Cout*Hout*Wout*(Cin/groups)*Kh*Kw; FC: in*out; FLOPs = 2 x MACs (what
               torch.utils.flop_counter counts; papers' "FLOPs" are usually MACs)
  other ops    BN (2/element), activations (1/element, softmax 3), pools (window size per
               output), adds, LRN: counted apart, never folded into MACs
  activations  output elements of every layer that makes a new tensor, input included;
               activations, dropout and flatten run in place and add none; bytes at --dtype
  RF           receptive field size and jump (effective stride) per layer; at joins the
               largest field over the branches
"""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _shape(text: str):
    from cnndsl.ir.shape import Shape
    if not re.fullmatch(r"\d+(x\d+)*", text) or "x" not in text and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a size like 224x224x3 (HxWxC), got {text!r}")
    dims = tuple(int(d) for d in text.split("x"))
    if min(dims) < 1 or len(dims) > 4:
        raise argparse.ArgumentTypeError(f"sizes must be positive, with at most 4 dimensions: {text!r}")
    return Shape(dims[-1], dims[:-1])


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnndsl", description="Check, count and compile CNNs written as .arch files.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONVENTIONS)
    p.add_argument("--version", action="version", version=f"cnndsl {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser("check", help="check shapes and print the per-layer table and totals",
                           description="Parse FILE, check every shape, and print the per-layer table: output shape, "
                                       "activation memory, params, MACs, receptive field; then the true totals.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONVENTIONS)
    check.add_argument("file", metavar="FILE", help="an .arch file")
    check.add_argument("--json", action="store_true", help="print the report as JSON (schema cnndsl.check/1)")
    check.add_argument("--input", type=_shape, metavar="HxWxC", help="override the file's input size")
    check.add_argument("--batch", type=_positive, default=1, metavar="N", help="batch size for memory (default 1)")
    check.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="element type for bytes")
    check.add_argument("--expand", action="store_true", help="list every layer inside blocks (default: one subtotal row a block)")
    return p


def _version() -> str:
    from cnndsl import __version__
    return __version__


def _load(args):
    from cnndsl.pipeline import compile_source
    from cnndsl.source import Source
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {args.file}")
    try:
        source = Source.from_path(path)
    except UnicodeDecodeError:
        raise UsageError(f"{args.file} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    return compile_source(source, args.input, batch=getattr(args, "batch", 1), dtype=getattr(args, "dtype", "fp32"))


def _check(args) -> int:
    from cnndsl.passes.report import render
    net = _load(args)
    if args.json:
        print(json.dumps(net.report.to_json(), indent=1))
    else:
        print(render(net.report, expand=args.expand), end="")
    return 0


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: a temp file beside it, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


COMMANDS = {"check": _check}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage message
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except CnnDslError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"cnndsl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnndsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line, never a traceback
        print(f"cnndsl: internal error: {type(exc).__name__}: {exc} (please report this with the input file)",
              file=sys.stderr)
        return 3
