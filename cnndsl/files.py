"""Writing files whole or not at all: every file cnndsl writes (the compiled outputs).

The guarantee of `write_atomic(path, data)`: `path` ends up holding either what it held
before or all of `data`, never a part of it; and no temp file outlives the write, even when
the process is killed with SIGKILL at any moment.

- On Linux, on a filesystem with O_TMPFILE (ext4, XFS, Btrfs, tmpfs and most others), the
  data goes into an unnamed file in `path`'s directory: if the process dies, the kernel frees
  it. Once complete it gets a name: `path` itself when nothing is there yet, else a temp name
  that is renamed over `path` at once (a window of microseconds).
- Elsewhere the data goes into a temp file named `.NAME.cnndsl-PID.XXXXXXXX.tmp` beside
  `path`, renamed over `path` when complete.

A process killed inside either window leaves such a temp file behind; every later write into
the same directory removes the ones whose PID no longer runs (only names of this exact form).
Symbolic links are followed: a link at `path` stays and its target is replaced.
Not promised: durability across a power loss or OS crash (no fsync), nor that a process
already reading the old file sees the new one (it keeps the old inode).

Problems with the output itself (a directory, a device or pipe, a missing directory, no
permission, a read-only or full filesystem) raise WriteError, whose message names the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

TEMP_NAME = re.compile(r"\..*\.cnndsl-(\d+)\.[0-9a-f]{8}\.tmp")
_LINKABLE = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


class WriteError(OSError):
    """The output cannot be written; the message says which file and why (exit code 2)."""


def write_atomic(path: str | Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write a whole file or nothing (see the module's docstring for the guarantee). `data`:
    the bytes, or chunks of them, each written before the next is taken (so large weights
    need not be joined into one copy, and a producer may reuse a chunk's buffer)."""
    target = check_output(Path(path))
    chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    remove_stale_temps(target.parent)
    if _LINKABLE:
        try:
            fd = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except OSError:  # not supported here (or not allowed: the portable way then says why)
            fd = None
        if fd is not None:
            return _write_unnamed(fd, target, chunks)
    _write_named(target, chunks)


def check_output(path: str | Path) -> Path:
    """The file that writing `path` replaces or creates (symlinks followed), or WriteError if it
    cannot be written that way: a directory, a device, pipe or socket, a missing directory."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    with _reasons(path):
        try:
            mode = os.stat(real).st_mode
        except (FileNotFoundError, NotADirectoryError):
            parent = real.parent
            if not parent.is_dir():
                raise WriteError(f"cannot write {path}: {'no such directory' if not parent.exists() else 'not a directory'}: "
                                 f"{path.parent}") from None
            return real
    if stat.S_ISDIR(mode):
        raise WriteError(f"cannot write {path}: it is a directory (name a file inside it)")
    if not stat.S_ISREG(mode):
        raise WriteError(f"cannot write {path}: not a regular file (a device, pipe or socket); the output is "
                         "written beside it and renamed over it, so it must be a regular file or not exist")
    return real


def _write_unnamed(fd: int, target: Path, chunks: Iterable) -> None:
    """Fill an O_TMPFILE file, then give it its name (linkat through /proc/self/fd)."""
    try:
        _fill(fd, chunks, target)
        with _reasons(target):
            dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _publish(f"/proc/self/fd/{fd}", dir_fd, target)
            finally:
                os.close(dir_fd)
    finally:
        os.close(fd)


def _publish(proc: str, dir_fd: int, target: Path) -> None:
    """Link the unnamed file in as `target`: directly if nothing is there, else through a
    temp name renamed over it. (src_dir_fd makes os.link call linkat with AT_SYMLINK_FOLLOW.)"""
    try:
        os.link(proc, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=True)
        return
    except FileExistsError:
        pass
    tmp = _temp_name(target)
    os.link(proc, tmp.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=True)
    try:
        os.replace(tmp.name, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp.name, dir_fd=dir_fd)
        raise


def _write_named(target: Path, chunks: Iterable) -> None:
    """The portable way: a named temp file beside `target`, renamed over it when complete."""
    tmp = _temp_name(target)
    with _reasons(target):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            _fill(fd, chunks, target)
        finally:
            os.close(fd)
        with _reasons(target):
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fill(fd: int, chunks: Iterable, target: Path) -> None:
    """Write every chunk. An OSError of the writing becomes a WriteError; whatever the
    producer of the chunks raises passes through unchanged."""
    f = open(fd, "wb", closefd=False)
    try:
        for chunk in chunks:
            with _reasons(target):
                f.write(chunk)
        with _reasons(target):
            f.flush()
    finally:
        with contextlib.suppress(OSError):  # after a failed flush, close() would fail the same way
            f.close()


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name[:120]}.cnndsl-{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files of `write_atomic` calls whose process has died; return them."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = TEMP_NAME.fullmatch(entry.name)
            if match and not _running(int(match[1])) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # (Windows' os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # someone else's process (EPERM), or not a pid: leave it
        return True
    return True


@contextlib.contextmanager
def _reasons(path: Path) -> Iterator[None]:
    """Turn an OSError into a WriteError that names `path` and the reason."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        error = WriteError(f"cannot write {path}: {_REASONS.get(exc.errno, exc.strerror or str(exc))} (nothing was changed)")
        error.errno = exc.errno
        raise error from None


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
