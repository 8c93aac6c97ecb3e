"""The commands of the command line: check, compile, run, bench. Each takes the parsed
arguments, prints its result and returns the exit code; a problem with the user's files or
flags raises UsageError (exit code 2), one in the .arch file CnnDslError (exit code 1)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from cnndsl.cli_args import UsageError
from cnndsl.files import WriteError, check_output, write_atomic


def read_source(name: str):
    """The .arch file named on the command line, as a Source; UsageError if it is missing, not
    a regular file, too large to be an .arch file, unreadable, or not UTF-8 text."""
    from cnndsl.source import Source
    from cnndsl.syntax.parser import MAX_SOURCE_CHARS
    try:
        info = os.stat(name)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{name} is a directory: name an .arch file")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{name} is not a regular file (a device, pipe or socket): name an .arch file")
        if info.st_size > 4 * MAX_SOURCE_CHARS:  # 4: the most bytes a UTF-8 character takes
            raise UsageError(f"{name} is too large for an .arch file ({info.st_size:,} bytes; "
                             f"at most {MAX_SOURCE_CHARS:,} characters)")
        return Source.from_path(name)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not UTF-8 text (byte {exc.start:,}): is it an .arch file?") from None
    except FileNotFoundError:
        raise UsageError(f"no such file: {name}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the name
        raise UsageError(f"cannot read {name!r}: {exc}") from None


def say(text: str, end: str = "\n") -> None:
    """Print to stdout; a full disk or a closed descriptor there is a usage error (exit 2). A
    reader that went away (BrokenPipeError) passes through: cnndsl then stops, quietly."""
    if sys.stdout is None:  # its descriptor was closed when cnndsl started (`>&-`)
        raise UsageError("cannot write to standard output: it is closed")
    try:
        print(text, end=end)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise UsageError(f"cannot write to standard output: {exc.strerror or exc}") from None


def _load(args):
    from cnndsl.pipeline import compile_source
    return compile_source(read_source(args.file), args.input, batch=getattr(args, "batch", 1),
                          dtype=getattr(args, "dtype", "fp32"), training=getattr(args, "training", False),
                          optimizer=getattr(args, "optimizer", "sgd-momentum"))


def check(args) -> int:
    from cnndsl.passes.report import render
    net = _load(args)
    if args.json:
        say(json.dumps(net.report.to_json(), indent=1))
    else:
        say(render(net.report, expand=args.expand), end="")
    return 0


_EXTENSIONS = {".py": "torch", ".onnx": "onnx"}


def compile_(args) -> int:
    out = Path(args.output)
    target = args.target or _EXTENSIONS.get(out.suffix.lower())
    if target is None:
        raise UsageError(f"cannot tell the target from {args.output!r}: name it .py or .onnx, or pass --target")
    try:
        check_output(out)  # before the work, which may take seconds
        if _same_file(args.output, args.file):
            raise UsageError(f"the output {args.output} is the input file {args.file}: refusing to overwrite it "
                             "(name another output)")
        write_atomic(out, COMPILERS[target](_load(args), args))
    except WriteError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _same_file(output: str, source: str) -> bool:
    """Whether writing `output` would replace `source`: the same path once links are resolved,
    or another name (hard link) of the same file."""
    try:
        return os.path.realpath(output) == os.path.realpath(source) or os.path.samefile(output, source)
    except (OSError, ValueError):  # one of them does not exist (or cannot be named)
        return False


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


COMPILERS = {"torch": _compile_torch, "onnx": _compile_onnx}


def run(args) -> int:
    from cnndsl.backends import ort_run
    if Path(args.file).suffix.lower() == ".onnx":
        model = _model_file(args.file)
    else:
        model = b"".join(_compile_onnx(_load(args), args))
    try:
        t = ort_run.run_model(model, args.provider, args.batch, args.seed, args.warmup, args.iterations)
    except (ort_run.ProviderUnavailable, ort_run.ModelError) as exc:
        raise UsageError(str(exc)) from None
    say(f"{Path(args.file).name} on {t.provider}: input {'x'.join(map(str, t.input_shape))}, "
          f"output {'x'.join(map(str, t.output_shape))}")
    say(f"batch {args.batch}: median {_ms(t.median_ms)} ms, p95 {_ms(t.p95_ms)} ms, {t.images_per_s:,.1f} images/s "
          f"({t.warmup} warm-up + {len(t.times_ms)} timed runs)")
    return 0


def _model_file(name: str) -> str:
    if not Path(name).is_file():
        raise UsageError(f"{name} is a directory, not an .onnx model" if Path(name).is_dir() else f"no such file: {name}")
    return name


def _ms(value: float) -> str:
    """Three significant digits, without exponents: 0.123, 12.3, 1,234."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def bench(args) -> int:
    from cnndsl.backends import bench as timing
    device = args.device or ("cuda" if _cuda_available() else "cpu")
    settings = timing.Settings(args.backend, device, args.batch, args.dtype, args.channels_last, args.compile,
                               args.cuda_graphs, args.warmup, args.iterations, args.seed)
    net = _load(args)
    measure = timing.bench_torch if args.backend == "torch" else timing.bench_onnxruntime
    try:
        r = measure(net, settings, progress=lambda msg: print(f"cnndsl: {msg} ...", file=sys.stderr, flush=True))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    flags = ", ".join(f for f, on in (("channels-last", args.channels_last), ("torch.compile", args.compile),
                                      ("CUDA graph", args.cuda_graphs)) if on)
    say(f"{net.graph.name} on {device} ({args.backend}, {args.dtype}{', ' + flags if flags else ''}, batch {args.batch}): "
          f"{r.images_per_s:,.1f} images/s; latency p50 {r.p50_ms:.3f} ms, p95 {r.p95_ms:.3f} ms "
          f"({args.iterations} timed after {args.warmup} warm-up)")
    measured = f"{r.peak_bytes / 1e6:,.1f} MB measured (torch.cuda.max_memory_allocated)" if r.peak_bytes else \
        "not measured off CUDA"
    say(f"peak memory: {measured}; {r.predicted_bytes / 1e6:,.1f} MB predicted by `cnndsl check --batch {args.batch}`")
    return 0


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


COMMANDS = {"check": check, "compile": compile_, "run": run, "bench": bench}
