"""Issue 10, the command line and files: user mistakes exit 2 with a sentence (never 3, the
internal error), a killed compile leaves no temp file, and the training-memory prediction is
the steady state (items 14, 15, 20, 25 and the CLI's other paths)."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnndsl.files
from cnndsl.files import WriteError, remove_stale_temps, write_atomic
from conftest import ROOT, CliResult

LENET = str(ROOT / "architectures/lenet5.arch")
VGG = str(ROOT / "architectures/vgg16.arch")


def _no_traceback(result, code: int, words: str) -> None:
    assert result.code == code, result.err
    assert words in result.err, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err


# -- 14: the output path -------------------------------------------------------------------------

def test_output_that_is_a_directory_exits_2(cli, tmp_path):
    _no_traceback(cli("compile", LENET, "-o", str(tmp_path), "--target", "torch"), 2, "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_regular_file_exits_2(cli, tmp_path):
    (tmp_path / "f").write_text("")
    _no_traceback(cli("compile", LENET, "-o", str(tmp_path / "f" / "x.py")), 2, "not a directory")
    _no_traceback(cli("compile", LENET, "-o", str(tmp_path / "none" / "x.py")), 2, "no such directory")


def test_output_where_even_root_cannot_write_exits_2(cli):
    _no_traceback(cli("compile", LENET, "-o", "/proc/cnndsl-test.py"), 2, "cannot write /proc/cnndsl-test.py")


@pytest.mark.parametrize("linkable", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_read_only_directory_exits_2(cli, tmp_path, monkeypatch, linkable):
    """Root writes anywhere, so the refusal is simulated: every file creation is refused."""
    monkeypatch.setattr(cnndsl.files, "_LINKABLE", linkable)
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        tmpfile = getattr(os, "O_TMPFILE", -1)
        if flags & os.O_CREAT or flags & tmpfile == tmpfile:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(cnndsl.files.os, "open", refuse)
    _no_traceback(cli("compile", LENET, "-o", str(tmp_path / "x.py")), 2, "permission denied")
    assert list(tmp_path.iterdir()) == []


class _FullDisk(io.RawIOBase):
    """A file on a disk that fills up after `room` bytes: then ENOSPC, as the kernel says it."""

    def __init__(self, fd: int, room: int):
        self.f, self.room = io.FileIO(fd, "wb", closefd=False), room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)


@pytest.mark.parametrize("linkable", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_full_disk_exits_2_and_keeps_the_old_file(cli, tmp_path, monkeypatch, linkable):
    monkeypatch.setattr(cnndsl.files, "_LINKABLE", linkable)
    monkeypatch.setattr(cnndsl.files, "open", lambda fd, mode, closefd: io.BufferedWriter(_FullDisk(fd, 1000)),
                        raising=False)
    out = tmp_path / "lenet.onnx"
    out.write_bytes(b"old")
    _no_traceback(cli("compile", LENET, "-o", str(out)), 2, "no space left on the device")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["lenet.onnx"]


def test_output_that_is_the_input_is_refused(cli, tmp_path):
    source = tmp_path / "net.arch"
    text = Path(LENET).read_text(encoding="utf-8")
    source.write_text(text, encoding="utf-8")
    (tmp_path / "link.py").symlink_to(source)
    os.link(source, tmp_path / "hard.py")
    for out in (source, tmp_path / "link.py", tmp_path / "hard.py", tmp_path / ".." / tmp_path.name / "net.arch"):
        _no_traceback(cli("compile", str(source), "-o", str(out), "--target", "torch"), 2, "is the input file")
    assert source.read_text(encoding="utf-8") == text


def test_output_that_is_a_pipe_or_device_is_refused(cli, tmp_path):
    """A device or pipe would be replaced by a regular file (as root, /dev/null itself)."""
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    _no_traceback(cli("compile", LENET, "-o", str(fifo)), 2, "not a regular file")
    assert fifo.is_fifo()


def test_a_symlinked_output_keeps_its_link(cli, tmp_path):
    (tmp_path / "link.py").symlink_to("real.py")
    assert cli("compile", LENET, "-o", str(tmp_path / "link.py")).code == 0
    assert (tmp_path / "link.py").is_symlink() and "class" in (tmp_path / "real.py").read_text()


# -- 15: killed while writing ----------------------------------------------------------------------

WRITER = """
import sys, time
import cnndsl.files
cnndsl.files._LINKABLE = sys.argv[2] == "1"
def chunks():
    yield b"x" * 1_000_000
    print("writing", flush=True)
    time.sleep(60)
    yield b"never"
cnndsl.files.write_atomic(sys.argv[1], chunks())
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("linkable", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_sigkill_while_writing_leaves_nothing(tmp_path, linkable):
    out = tmp_path / "net.onnx"
    out.write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), "1" if linkable else "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.kill()
    proc.wait(timeout=30)
    left = sorted(p.name for p in tmp_path.iterdir())
    if linkable:  # the unnamed file died with the process
        assert left == ["net.onnx"]
    else:  # a named temp file of a dead process: the next write into the folder removes it
        assert len(left) == 2 and cnndsl.files.TEMP_NAME.fullmatch(left[0]), left
        write_atomic(tmp_path / "other.py", b"new")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "other.py"]
    assert out.read_bytes() == b"old"


def test_stale_temps_of_running_processes_are_kept(tmp_path):
    mine = tmp_path / f".a.onnx.cnndsl-{os.getpid()}.0123abcd.tmp"
    dead = tmp_path / ".a.onnx.cnndsl-999999999.0123abcd.tmp"
    other = tmp_path / ".a.onnx.unrelated-999999999.0123abcd.tmp"
    for p in (mine, dead, other):
        p.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def _writing_unnamed(pid: int, folder: Path) -> bool:
    """Whether process `pid` holds a file in `folder` that has no name yet (O_TMPFILE)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
    except OSError:
        return False
    return any(t.startswith(f"{folder}/") and t.endswith("(deleted)") for t in targets)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not cnndsl.files._LINKABLE, reason="O_TMPFILE needs Linux and /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_compile_killed_mid_write_leaves_nothing(tmp_path, sig, code):
    """`cnndsl compile vgg16` killed while it streams its 528 MB of weights: no file at all.
    Ctrl-C (SIGINT) ends it with 130, quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "cnndsl", "compile", VGG, "-o", str(tmp_path / "vgg16.onnx")],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _writing_unnamed(proc.pid, tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "compile ended before it was caught writing"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (code, "")
    assert list(tmp_path.iterdir()) == []


def test_write_errors_name_the_file(tmp_path):
    with pytest.raises(WriteError, match="it is a directory"):
        write_atomic(tmp_path, b"x")
    assert isinstance(WriteError("x"), OSError)  # the parser cache's `except OSError` still holds


# -- 20: training memory in the steady state -------------------------------------------------------

def test_training_prediction_holds_the_optimizer_state(cli):
    """ResNet-50 at batch 32 peaks in backward; the state made by the first step is held there
    from the second step on: momentum adds one copy of the parameters, Adam two (was 0 B)."""
    import cnndsl
    from cnndsl.passes.memory import estimate
    r = cnndsl.load(ROOT / "architectures/resnet50.arch").report
    peaks = {opt: estimate(r.graph, r.shapes, r.counts, batch=32, training=True, optimizer=opt)
             for opt in ("sgd", "sgd-momentum", "adam")}
    assert {m.phase for m in peaks.values()} == {"backward"}
    params = r.totals.params * 4
    assert peaks["sgd-momentum"].peak - peaks["sgd"].peak == params == peaks["sgd-momentum"].optimizer_state
    assert peaks["adam"].peak - peaks["sgd"].peak == 2 * params
    res = cli("check", "architectures/resnet50.arch", "--batch", "32", "--training", "--optimizer", "adam")
    assert res.code == 0 and "in the steady state (from the second step on" in res.out


# -- 25 and the other paths: the flag or file is blamed, exit 2 ------------------------------------

def test_input_flag_of_the_wrong_rank_blames_the_flag(cli):
    res = cli("check", "architectures/lenet5.arch", "--input", "224x224")
    assert res.code == 1 and res.err.startswith("--input:1:1: error: --input 224x224 is 1D"), res.err
    assert "lenet5.arch:8" not in res.err


@pytest.mark.parametrize("args, words", [
    (["--input", "99999999999999999999x2x3"], "argument --input: '99999999999999999999x2x3': each dimension"),
    (["--input", "224x224x\u0663"], "argument --input: expected a size"),
    (["--input", "9" * 5000 + "x2x3"], "argument --input: '99999"),
    (["--batch", "9" * 5000], "argument --batch: expected a batch size from 1 to 1,000,000, got '999"),
    (["--batch", "1000001"], "argument --batch"),
    (["--batch", "\u0663"], "argument --batch"),
    (["--dtype", "fp64"], "argument --dtype"),
])
def test_bad_check_flags_exit_2(cli, args, words):
    res = cli("check", "architectures/lenet5.arch", *args)
    _no_traceback(res, 2, words)
    assert len(res.err) < 2000  # a long value is quoted cut short


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], "argument --seed"), (["--seed", "9" * 30], "argument --seed"),
    (["--opset", "9" * 5000], "argument --opset"), (["--opset", "x"], "argument --opset"),
])
def test_bad_compile_flags_exit_2(cli, tmp_path, args, words):
    _no_traceback(cli("compile", "architectures/lenet5.arch", "-o", str(tmp_path / "x.onnx"), *args), 2, words)


def test_input_files_that_are_not_arch_files_exit_2(cli, tmp_path, monkeypatch):
    _no_traceback(cli("check", "/dev/null"), 2, "not a regular file")
    _no_traceback(cli("check", str(tmp_path)), 2, "is a directory")
    big = tmp_path / "big.arch"
    with open(big, "wb") as f:
        f.truncate(30_000_000)  # sparse: no disk used
    _no_traceback(cli("check", str(big)), 2, "too large for an .arch file")
    (tmp_path / "bin.arch").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    _no_traceback(cli("check", str(tmp_path / "bin.arch")), 2, "not UTF-8 text")


def test_unreadable_input_exits_2(cli, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_text", refuse)
    _no_traceback(cli("check", "architectures/lenet5.arch"), 2, "cannot read architectures/lenet5.arch: Permission denied")


def test_keyboard_interrupt_exits_130_quietly(cli, monkeypatch):
    import cnndsl.cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setitem(cnndsl.cli.COMMANDS, "check", interrupted)
    assert cli("check", "architectures/lenet5.arch") == CliResult(130, "", "")


def test_closed_pipe_in_text_mode_is_quiet():
    command = f"set -o pipefail; {sys.executable} -m cnndsl check architectures/resnet152.arch --expand | head -c 10"
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, len(proc.stdout), proc.stderr) == (0, 10, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("args", [[VGG], [VGG, "--json"], [LENET]], ids=["text", "json", "small"])
def test_full_or_closed_stdout_exits_2(args):
    """A report to a full disk (/dev/full) or a closed stdout: exit 2 with a sentence, whether
    the write fails while printing or at the final flush."""
    for redirect in ("> /dev/full", ">&-"):
        proc = subprocess.run(["bash", "-c", f"{sys.executable} -m cnndsl check {' '.join(args)} {redirect}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (redirect, proc.stderr)
        assert "cannot write to standard output" in proc.stderr, (redirect, proc.stderr)
