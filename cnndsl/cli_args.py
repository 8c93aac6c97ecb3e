"""The command line's arguments: the argparse parser of every command, and the checks of
each flag's value (a bad value is a usage error, exit code 2, naming the flag)."""

from __future__ import annotations

import argparse
import re

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

TARGETS = ("torch", "onnx")
MAX_BATCH = 1_000_000
MAX_SEED = 2**63 - 1
_DIGITS = 19  # more digits than any accepted number has: refused before int() reads them


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _shown(text: str) -> str:
    """A flag's value as a message quotes it: repr, cut short if long."""
    return repr(text) if len(text) <= 40 else f"{text[:30]!r}... ({len(text):,} characters)"


def shape(text: str):
    """--input HxWxC (or L x C in 1D, D x H x W x C in 3D): the same digits-only size the
    DSL writes, each dimension at most the DSL's own limit."""
    from cnndsl.ir.shape import MAX_DIM, Shape
    if not re.fullmatch(r"[0-9]+(x[0-9]+){0,3}", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"expected a size like 224x224x3 (HxWxC; 1D: LxC, 3D: DxHxWxC), got {_shown(text)}")
    digits = [d.lstrip("0") or "0" for d in text.split("x")]  # (int() refuses 4,300 digits, even zeros)
    if any(len(d) > len(str(MAX_DIM)) or int(d) > MAX_DIM for d in digits):
        raise argparse.ArgumentTypeError(f"{_shown(text)}: each dimension must be at most {MAX_DIM:,}")
    dims = tuple(int(d) for d in digits)
    if min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: every dimension must be positive")
    return Shape(dims[-1], dims[:-1])


def _integer(text: str, low: int, high: int, what: str) -> int:
    digits = text.lstrip("0") or "0"
    if not re.fullmatch(r"[0-9]+", text, re.ASCII) or len(digits) > _DIGITS or not low <= int(digits) <= high:
        raise argparse.ArgumentTypeError(f"expected {what} from {low:,} to {high:,}, got {_shown(text)}")
    return int(digits)


def positive(text: str) -> int:
    return _integer(text, 1, 2**31 - 1, "a positive integer")


def batch(text: str) -> int:
    return _integer(text, 1, MAX_BATCH, "a batch size")


def count(text: str) -> int:
    return _integer(text, 0, 2**31 - 1, "a number of runs")


def seed(text: str) -> int:
    return _integer(text, 0, MAX_SEED, "a seed")


def _opset(text: str) -> int:
    from cnndsl.backends.onnx_emit import check_opset
    try:
        return check_opset(_integer(text, 1, 10_000, "an opset"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(version: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnndsl", description="Check, count and compile CNNs written as .arch files.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONVENTIONS)
    p.add_argument("--version", action="version", version=f"cnndsl {version}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _check_parser(sub)
    _compile_parser(sub)
    _run_parser(sub)
    _bench_parser(sub)
    return p


def _check_parser(sub) -> None:
    check = sub.add_parser("check", help="check shapes and print the per-layer table and totals",
                           description="Parse FILE, check every shape, and print the per-layer table: output shape, "
                                       "activation memory, params, MACs, receptive field; then the true totals.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONVENTIONS)
    check.add_argument("file", metavar="FILE", help="an .arch file")
    check.add_argument("--json", action="store_true", help="print the report as JSON (schema cnndsl.check/1)")
    check.add_argument("--input", type=shape, metavar="HxWxC", help="override the file's input size")
    check.add_argument("--batch", type=batch, default=1, metavar="N",
                       help=f"batch size for memory (default 1, at most {MAX_BATCH:,})")
    check.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="element type for bytes")
    check.add_argument("--expand", action="store_true", help="list every layer inside blocks (default: one subtotal row a block)")
    check.add_argument("--training", action="store_true",
                       help="also predict the peak memory of a training step in the steady state (from the second "
                            "step on: forward, backward, optimizer step, with the optimizer's state held throughout)")
    check.add_argument("--optimizer", choices=("sgd", "sgd-momentum", "adam"), default="sgd-momentum",
                       help="optimizer state for --training (default sgd-momentum)")


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time the compiled network (PyTorch or onnxruntime) and measure its memory",
                       description="Compile FILE, warm up, time forward passes with proper synchronisation, and "
                                   "report images/s, latency p50/p95, measured peak GPU memory and the peak "
                                   "`check` predicts for the same settings.")
    b.add_argument("file", metavar="FILE", help="an .arch file")
    b.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch", help="default torch")
    b.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    b.add_argument("--batch", type=batch, default=1, metavar="N", help="batch size (default 1)")
    b.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="default fp32")
    b.add_argument("--channels-last", action="store_true", help="NHWC memory format (torch)")
    b.add_argument("--compile", action="store_true", help="torch.compile the module first")
    b.add_argument("--cuda-graphs", action="store_true", help="replay one captured CUDA graph (small batches)")
    b.add_argument("--warmup", type=positive, default=10, metavar="N", help="untimed iterations (default 10)")
    b.add_argument("--iterations", type=positive, default=50, metavar="N", help="timed iterations (default 50)")
    b.add_argument("--seed", type=seed, default=0, metavar="N", help="seed of the weights and the input")
    b.add_argument("--input", type=shape, metavar="HxWxC", help="override the file's input size")


def _compile_parser(sub) -> None:
    comp = sub.add_parser("compile", help="compile to PyTorch source (.py) or an ONNX model (.onnx)",
                          description="Check FILE, then write it as readable standalone PyTorch source "
                                      "(--target torch) or as an ONNX model with weights (--target onnx).")
    comp.add_argument("file", metavar="FILE", help="an .arch file")
    comp.add_argument("-o", "--output", required=True, metavar="OUT",
                      help="the file to write: whole or not at all, even if cnndsl is killed")
    comp.add_argument("--target", choices=TARGETS, help="default: from OUT's extension (.py: torch, .onnx: onnx)")
    comp.add_argument("--seed", type=seed, metavar="N", help="seed of the initial weights (onnx; default 0)")
    comp.add_argument("--input", type=shape, metavar="HxWxC", help="override the file's input size")
    _onnx_options(comp)


def _run_parser(sub) -> None:
    run = sub.add_parser("run", help="run an ONNX model (or an .arch file) with onnxruntime and time it",
                         description="Run MODEL (.onnx, or an .arch file compiled in memory) with onnxruntime on "
                                     "random input; print the output shape and the time per batch.")
    run.add_argument("file", metavar="MODEL", help="an .onnx model or an .arch file")
    run.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="execution provider (default cpu)")
    run.add_argument("--batch", type=batch, default=1, metavar="N", help="batch size (default 1)")
    run.add_argument("--seed", type=seed, default=0, metavar="N", help="seed of the input and of an .arch's weights")
    run.add_argument("--iterations", type=positive, default=10, metavar="N", help="timed runs (default 10)")
    run.add_argument("--warmup", type=count, default=3, metavar="N", help="untimed runs first (default 3)")
    run.add_argument("--input", type=shape, metavar="HxWxC", help="override an .arch file's input size")
    _onnx_options(run)


def _onnx_options(p) -> None:
    """Options of ONNX emission, shared by `compile` (.onnx) and `run` (.arch)."""
    p.add_argument("--weights", metavar="FILE", help="weights: a state dict as .safetensors, .npz or .pt "
                                                     "(default: the initialiser under --seed)")
    p.add_argument("--fp16", action="store_true", help="weights and I/O in float16")
    p.add_argument("--fold-bn", action="store_true", help="fold batch norm into the conv before it")
    p.add_argument("--opset", type=_opset, metavar="N", help="ONNX opset, 17 (the default) or newer")
