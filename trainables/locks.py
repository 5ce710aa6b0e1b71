"""One writer per folder: an exclusive ``flock`` on ``FOLDER/.lock`` that names its holder.

The kernel releases the lock when its process dies (a kill cannot leave a stale lock), and a
second process is refused at once with the holder's PID, not made to wait.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FolderLocked", "folder_lock", "LOCK_FILE"]

LOCK_FILE = ".lock"


class FolderLocked(RuntimeError):
    """Another live process holds the folder; the message names its PID."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return text or "unknown"


def open_lock_file(path: Path) -> int:
    """Open (or create) the lock file without following a link, and only a regular file: a
    received folder whose ``.lock`` links elsewhere must not make us truncate that target."""
    import stat

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise FolderLocked(f"{path} is a symbolic link; a lock file must be a regular "
                               f"file: remove it") from None
        raise FolderLocked(f"cannot open the lock file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FolderLocked(f"{path} is not a regular file; a lock file must be: remove it")
    return fd


@contextmanager
def folder_lock(folder: Path, what: str = "folder") -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` body; :class:`FolderLocked` if it is taken."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(folder / LOCK_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(f"{what} {str(folder)!r} is in use by another mistudy process "
                               f"(PID {_holder(fd)}); wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
