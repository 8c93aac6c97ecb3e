"""The command line: with cli_args (the flags) and cli_commands (what each command does),
the only code that prints or exits.

Exit codes: 0 clean, 1 diagnostics in the input, 2 usage errors (bad flags; input or output
files that are missing, unreadable or unwritable; a full disk), 3 an internal error (a bug in
cnndsl: reported in one line, no traceback), 130 interrupted (Ctrl-C), quietly.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from cnndsl.cli_args import CONVENTIONS, TARGETS, UsageError, build_parser
from cnndsl.cli_commands import COMMANDS
from cnndsl.diagnostics import CnnDslError

__all__ = ["main", "entry", "COMMANDS", "CONVENTIONS", "TARGETS", "UsageError"]


def _version() -> str:
    from cnndsl import __version__
    return __version__


def entry() -> NoReturn:
    """The `cnndsl` command: main(), then a quick exit. Tearing the interpreter down (numpy's,
    protobuf's and onnx's modules) takes 40-50 ms, a tenth of compiling ResNet-50 to ONNX, and
    frees nothing the OS does not; so once the output is flushed the process just ends, unless
    torch or onnxruntime were loaded (they may have exit hooks: compile workers, CUDA)."""
    code = _flushed(main())
    if not any(name in sys.modules for name in ("torch", "onnxruntime")):
        os._exit(code)
    sys.exit(code)


def _flushed(code: int) -> int:
    """Flush what is still buffered; `code`, unless that fails: a reader gone away is quiet,
    a full disk or another error writing the output is a usage error (exit 2)."""
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the descriptor was closed when cnndsl started
                stream.flush()
    except BrokenPipeError:
        _silence_stdout()
    except OSError as exc:
        _silence_stdout()
        _warn(f"cnndsl: error: cannot write to standard output: {exc.strerror or exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _warn(text: str) -> None:
    """Print to stderr, if it can be written at all."""
    if sys.stderr is None:
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit finds no broken
    pipe to complain about ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # (AttributeError: no stdout at all)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: the shell shows it; no traceback, no message
        return 130
    except BrokenPipeError:  # `cnndsl check ... | head`: the reader has all it wanted
        _silence_stdout()
        return 0


def _main(argv: list[str] | None) -> int:
    parser = build_parser(_version())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage message
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except CnnDslError as exc:
        _warn(exc.render())
        return 1
    except UsageError as exc:
        _warn(f"cnndsl: error: {exc}")
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:  # a bug: say so in one line, never a traceback
        _warn(f"cnndsl: internal error: {type(exc).__name__}: {exc} (please report this with the input file)")
        return 3
