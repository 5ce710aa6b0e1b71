"""Files and the machine: the project's one door for writing a file (atomically, never through
a link or into a special file) and for reading one from a study folder or a bundle (a regular
file only, bounded, never blocking on a FIFO), and the CPU's name for results files. Torch-free
and dependency-free: every package uses it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "cache_root", "UnsafeTarget", "check_target", "open_append",
           "replace_atomically", "atomic_write_bytes", "atomic_write_text", "UnreadableFile",
           "read_regular_bytes", "read_regular_text"]


# ---- the machine -------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cache_root() -> Path:
    """This machine's mistudy cache: ``$MISTUDY_DATA``, else ``~/.cache/mistudy`` (datasets
    downloaded or converted, empty study stores)."""
    return Path(os.environ.get("MISTUDY_DATA", Path.home() / ".cache" / "mistudy"))


# ---- files ------------------------------------------------------------------------------
class UnsafeTarget(ValueError):
    """A file mistudy would write is a symbolic link or no regular file (a FIFO, a device):
    refused, never written through or replaced (the message says which and what to do)."""


def check_target(path: Path) -> None:
    """:class:`UnsafeTarget` unless ``path`` is absent or a regular file (links refused: a
    folder received from elsewhere must not make us write where its links point)."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafeTarget(f"{path} is a symbolic link; mistudy writes no file through a "
                           f"link: remove it (or give another path)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise UnsafeTarget(f"{path} is not a regular file; mistudy writes regular files "
                           f"only: remove it (or give another path)")


def open_append(path: Path) -> Any:
    """``path`` opened for appending bytes (created if absent), never through a link and
    only a regular file (:class:`UnsafeTarget`)."""
    check_target(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        if Path(path).is_symlink():  # made a link between the check and the open
            check_target(path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_target(path)
    return os.fdopen(fd, "ab")


def replace_atomically(path: Path, build: Callable[[Path], None], tag: str = "tmp") -> None:
    """Give ``path`` its new content whole or not at all: ``build`` writes it into a hidden
    file beside ``path`` (``.NAME.TAG-PID``), which is renamed into place; on an error the
    hidden file is removed and the old ``path`` stays. The one atomic write of the project:
    a ``path`` that is a link or no regular file is refused (:func:`check_target`)."""
    path = Path(path)
    check_target(path)
    tmp = path.with_name(f".{path.name}.{tag}-{os.getpid()}")
    try:
        build(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`replace_atomically`, flushed to disk first
    (a kill or a full disk leaves the old file, never a torn one)."""
    def build(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    replace_atomically(path, build)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


class UnreadableFile(OSError):
    """A file mistudy would read is no regular file (a FIFO, a device, a folder), a link, or
    larger than allowed; ``str()`` is one line naming it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unreadable file"


def read_regular_bytes(path: Path, max_bytes: int) -> bytes:
    """``path``'s bytes, read only when it is a regular file (no link followed) of at most
    ``max_bytes``. Opened with O_NONBLOCK, so a FIFO in its place is refused at once instead
    of blocking the reader forever (:class:`UnreadableFile`); a missing file raises
    ``FileNotFoundError``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if path.is_symlink():
            raise UnreadableFile(f"{path} is a symbolic link; mistudy reads no study file "
                                 "through a link") from None
        if path.is_dir():
            raise UnreadableFile(f"{path} is a folder, not a file") from None
        raise UnreadableFile(f"{path} cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableFile(f"{path} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(f"{path} is not a regular file (a FIFO, socket or device); "
                                 "mistudy reads regular files only")
        if st.st_size > max_bytes:
            raise UnreadableFile(f"{path} is {st.st_size:,} bytes, more than the "
                                 f"{max_bytes:,} allowed")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # grew while read
            raise UnreadableFile(f"{path} is more than the {max_bytes:,} bytes allowed")
        return data
    finally:
        os.close(fd)


def read_regular_text(path: Path, max_bytes: int) -> str:
    """:func:`read_regular_bytes` decoded as UTF-8 (``UnreadableFile`` if it is not)."""
    try:
        return read_regular_bytes(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path} is not UTF-8 text") from None
