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
from pathlib import Path
from typing import NoReturn

from cnndsl.diagnostics import CnnDslError
from cnndsl.files import write_atomic

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
    check.add_argument("--training", action="store_true",
                       help="also predict the peak memory of one training step (forward, backward, optimizer step)")
    check.add_argument("--optimizer", choices=("sgd", "sgd-momentum", "adam"), default="sgd-momentum",
                       help="optimizer state for --training (default sgd-momentum)")
    _compile_parser(sub)
    _bench_parser(sub)
    return p


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time the compiled network (PyTorch or onnxruntime) and measure its memory",
                       description="Compile FILE, warm up, time forward passes with proper synchronisation, and "
                                   "report images/s, latency p50/p95, measured peak GPU memory and the peak "
                                   "`check` predicts for the same settings.")
    b.add_argument("file", metavar="FILE", help="an .arch file")
    b.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch", help="default torch")
    b.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    b.add_argument("--batch", type=_positive, default=1, metavar="N", help="batch size (default 1)")
    b.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="default fp32")
    b.add_argument("--channels-last", action="store_true", help="NHWC memory format (torch)")
    b.add_argument("--compile", action="store_true", help="torch.compile the module first")
    b.add_argument("--cuda-graphs", action="store_true", help="replay one captured CUDA graph (small batches)")
    b.add_argument("--warmup", type=_positive, default=10, metavar="N", help="untimed iterations (default 10)")
    b.add_argument("--iterations", type=_positive, default=50, metavar="N", help="timed iterations (default 50)")
    b.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the weights and the input")
    b.add_argument("--input", type=_shape, metavar="HxWxC", help="override the file's input size")


def _compile_parser(sub) -> None:
    comp = sub.add_parser("compile", help="compile to PyTorch source (.py) or an ONNX model (.onnx)",
                          description="Check FILE, then write it as readable standalone PyTorch source "
                                      "(--target torch) or as an ONNX model with weights (--target onnx).")
    comp.add_argument("file", metavar="FILE", help="an .arch file")
    comp.add_argument("-o", "--output", required=True, metavar="OUT", help="the file to write (atomically)")
    comp.add_argument("--target", choices=TARGETS, help="default: from OUT's extension (.py: torch, .onnx: onnx)")
    comp.add_argument("--seed", type=int, metavar="N", help="seed of the initial weights (onnx; default 0)")
    comp.add_argument("--input", type=_shape, metavar="HxWxC", help="override the file's input size")
    _onnx_options(comp)
    run = sub.add_parser("run", help="run an ONNX model (or an .arch file) with onnxruntime and time it",
                         description="Run MODEL (.onnx, or an .arch file compiled in memory) with onnxruntime on "
                                     "random input; print the output shape and the time per batch.")
    run.add_argument("file", metavar="MODEL", help="an .onnx model or an .arch file")
    run.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="execution provider (default cpu)")
    run.add_argument("--batch", type=_positive, default=1, metavar="N", help="batch size (default 1)")
    run.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the input and of an .arch's weights")
    run.add_argument("--iterations", type=_positive, default=10, metavar="N", help="timed runs (default 10)")
    run.add_argument("--warmup", type=_count, default=3, metavar="N", help="untimed runs first (default 3)")
    run.add_argument("--input", type=_shape, metavar="HxWxC", help="override an .arch file's input size")
    _onnx_options(run)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of runs (0 or more), got {text!r}")
    return int(text)


def _onnx_options(p) -> None:
    """Options of ONNX emission, shared by `compile` (.onnx) and `run` (.arch)."""
    p.add_argument("--weights", metavar="FILE", help="weights: a state dict as .safetensors, .npz or .pt "
                                                     "(default: the initialiser under --seed)")
    p.add_argument("--fp16", action="store_true", help="weights and I/O in float16")
    p.add_argument("--fold-bn", action="store_true", help="fold batch norm into the conv before it")
    p.add_argument("--opset", type=_opset, metavar="N", help="ONNX opset, 17 (the default) or newer")


def _opset(text: str) -> int:
    from cnndsl.backends.onnx_emit import check_opset
    try:
        return check_opset(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if text.lstrip("-").isdigit() else f"not a number: {text!r}")


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
    return compile_source(source, args.input, batch=getattr(args, "batch", 1), dtype=getattr(args, "dtype", "fp32"),
                          training=getattr(args, "training", False), optimizer=getattr(args, "optimizer", "sgd-momentum"))


def _check(args) -> int:
    from cnndsl.passes.report import render
    net = _load(args)
    if args.json:
        print(json.dumps(net.report.to_json(), indent=1))
    else:
        print(render(net.report, expand=args.expand), end="")
    return 0


TARGETS = ("torch", "onnx")
_EXTENSIONS = {".py": "torch", ".onnx": "onnx"}


def _compile(args) -> int:
    out = Path(args.output)
    target = args.target or _EXTENSIONS.get(out.suffix.lower())
    if target is None:
        raise UsageError(f"cannot tell the target from {args.output!r}: name it .py or .onnx, or pass --target")
    if not out.parent.is_dir():
        raise UsageError(f"no such directory: {out.parent}")
    net = _load(args)
    write_atomic(out, COMPILERS[target](net, args))
    return 0


def _compile_torch(net, args) -> bytes:
    if args.seed is not None:
        raise UsageError("--seed sets the weights stored in an .onnx file; a .py file holds no weights "
                         "(for seeded weights in PyTorch use cnndsl.load(FILE).to_torch(seed=N))")
    given = [flag for flag, value in (("--weights", args.weights), ("--fp16", args.fp16),
                                      ("--fold-bn", args.fold_bn), ("--opset", args.opset)) if value]
    if given:
        raise UsageError(f"{given[0]} applies to ONNX output only (name the output .onnx, or pass --target onnx)")
    from cnndsl.backends.torch_source import to_source
    return to_source(net).encode()


def _compile_onnx(net, args) -> list:
    from cnndsl.backends.onnx_emit import DEFAULT_OPSET, serialize
    from cnndsl.backends.weights_io import WeightsError
    try:
        return serialize(net, seed=args.seed or 0, weights=args.weights, fp16=args.fp16, fold_bn=args.fold_bn,
                         opset=args.opset or DEFAULT_OPSET)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None


def _run(args) -> int:
    from cnndsl.backends import ort_run
    if Path(args.file).suffix.lower() == ".onnx":
        if not Path(args.file).is_file():
            raise UsageError(f"no such file: {args.file}")
        model = args.file
    else:
        model = b"".join(_compile_onnx(_load(args), args))
    try:
        t = ort_run.run_model(model, args.provider, args.batch, args.seed, args.warmup, args.iterations)
    except (ort_run.ProviderUnavailable, ort_run.ModelError) as exc:
        raise UsageError(str(exc)) from None
    print(f"{Path(args.file).name} on {t.provider}: input {'x'.join(map(str, t.input_shape))}, "
          f"output {'x'.join(map(str, t.output_shape))}")
    print(f"batch {args.batch}: median {_ms(t.median_ms)} ms, p95 {_ms(t.p95_ms)} ms, {t.images_per_s:,.1f} images/s "
          f"({t.warmup} warm-up + {len(t.times_ms)} timed runs)")
    return 0


def _ms(value: float) -> str:
    """Three significant digits, without exponents: 0.123, 12.3, 1,234."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _bench(args) -> int:
    from cnndsl.backends import bench
    device = args.device or ("cuda" if _cuda_available() else "cpu")
    settings = bench.Settings(args.backend, device, args.batch, args.dtype, args.channels_last, args.compile,
                              args.cuda_graphs, args.warmup, args.iterations, args.seed)
    net = _load(args)
    run = bench.bench_torch if args.backend == "torch" else bench.bench_onnxruntime
    try:
        r = run(net, settings, progress=lambda msg: print(f"cnndsl: {msg} ...", file=sys.stderr, flush=True))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    flags = ", ".join(f for f, on in (("channels-last", args.channels_last), ("torch.compile", args.compile),
                                      ("CUDA graph", args.cuda_graphs)) if on)
    print(f"{net.graph.name} on {device} ({args.backend}, {args.dtype}{', ' + flags if flags else ''}, batch {args.batch}): "
          f"{r.images_per_s:,.1f} images/s; latency p50 {r.p50_ms:.3f} ms, p95 {r.p95_ms:.3f} ms "
          f"({args.iterations} timed after {args.warmup} warm-up)")
    measured = f"{r.peak_bytes / 1e6:,.1f} MB measured (torch.cuda.max_memory_allocated)" if r.peak_bytes else \
        "not measured off CUDA"
    print(f"peak memory: {measured}; {r.predicted_bytes / 1e6:,.1f} MB predicted by `cnndsl check --batch {args.batch}`")
    return 0


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


COMPILERS = {"torch": _compile_torch, "onnx": _compile_onnx}
COMMANDS = {"check": _check, "compile": _compile, "run": _run, "bench": _bench}


def entry() -> NoReturn:
    """The `cnndsl` command: main(), then a quick exit. Tearing the interpreter down (numpy's,
    protobuf's and onnx's modules) takes 40-50 ms, a tenth of compiling ResNet-50 to ONNX, and
    frees nothing the OS does not; so once the output is flushed the process just ends, unless
    torch or onnxruntime were loaded (they may have exit hooks: compile workers, CUDA)."""
    code = main()
    if not any(name in sys.modules for name in ("torch", "onnxruntime")):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe: leave it to the usual exit
            pass
        else:
            os._exit(code)
    sys.exit(code)


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
