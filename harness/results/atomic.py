"""Crash-safe files: whatever is written appears whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from harness.errors import HarnessError, WriteError, is_write_error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_bytes_atomic(path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``. A full disk, a
    read-only or forbidden folder, a name too long (``WRITE_ERRNOS``) raise WriteError, a one-line
    HarnessError naming the path; ``path`` is then as it was."""
    path = Path(path)
    try:
        _write(path, data)
    except OSError as exc:
        if is_write_error(exc) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from None
        raise


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder of the path should be: say so
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename) from None
    # The temporary name is short whatever ``path`` is: a name that fits must not fail for its prefix.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def writable_folder(path, flag: str) -> Path:
    """``path`` if this process can create it (or write into it), or HarnessError (one line, naming
    ``flag``). Checked before any work, so that a bad output path costs nothing; the check leaves no
    folder behind, so a run refused later for another reason writes nothing either."""
    if path is None or str(path).strip() == "":
        raise HarnessError(f"{flag} '': an empty path names no folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {path}: exists and is not a folder")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # permissions, read-only or virtual file systems
            pass
    except OSError as exc:
        raise HarnessError(f"{flag} {path}: cannot write there: {exc.strerror or exc}") from None
    finally:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
    return path


def writable_file(path, flag: str, keep_out_of=()) -> Path:
    """``path`` if a file can be written there, or HarnessError (one line, naming ``flag``): not a folder,
    in a folder this process can write to, and not inside or over any of ``keep_out_of`` (the command's
    inputs: a run folder or a file it reads must not be overwritten by what it writes). Checked before
    any work."""
    if path is None or str(path).strip() == "":
        raise HarnessError(f"{flag} '': an empty path names no file")
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"{flag} {path}: is a folder; name a file")
    target = path.resolve()
    for kept in keep_out_of:
        kept = Path(kept).resolve()
        if target == kept or kept in target.parents:
            raise HarnessError(f"{flag} {path}: would write over {'a file of ' if target != kept else ''}the "
                               f"input {kept}; name a file elsewhere")
    writable_folder(path.parent, f"{flag} {path}:")
    return path
