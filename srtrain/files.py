"""Writing files people keep: each is complete or absent, whatever stops the write (a kill, a full disk), and a
failed write leaves the previous version in place."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def first_line(err: Exception) -> str:
    """An error's reason in one line: copytree's list of (source, target, why) names its first file; torch's zip
    writer's message its first line."""
    if isinstance(err, shutil.Error) and err.args and isinstance(err.args[0], list) and err.args[0]:
        source, _target, why = err.args[0][0]
        more = f" and {len(err.args[0]) - 1} more" if len(err.args[0]) > 1 else ""
        return f"{source}: {why}{more}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def remove(path: Path) -> None:
    """Remove a folder (a leftover temporary one, one a failed start made) or a file (someone's, in the way)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a hidden file beside `path` with the same suffix (writers that pick the format from it
    still do), flushed to disk, then renamed over `path`. On any failure the temporary file goes and `path` is as
    it was; a kill leaves at most the hidden `.NAME.partial.SUFFIX`, which the next write replaces."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:  # named after the file people know (a writer may not say which file failed)
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline, synced to disk. A failed append (a full disk) leaves the file as it was: never
    half a line, which every later reader would trip over."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            data = memoryview((line + "\n").encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        os.close(fd)
