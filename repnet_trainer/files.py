"""Atomic file writes: a crash leaves the old file or the new one, whole.

A file is written to a temporary file in the same folder, synced to disk and
renamed over the target (`os.replace`, atomic on POSIX and Windows). The new
file gets the permissions `open(path, "w")` would give it under the current
umask, or keeps the mode of the file it replaces.
"""

import contextlib
import json
import os
import stat
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yields a temporary path that replaces `path` when the block succeeds.

    Missing folders are created. On an error (or Ctrl-C) in the block the
    temporary file is removed and `path` is left as it was.

    Example:

    ```python
    with atomic_path("weights.npz") as temporary:
        np.savez(temporary, **weights)
    ```

    Args:
        path: str or path-like. The file to write.
        suffix: str. The temporary file's suffix, for writers that check it
            (Keras saves only to a `.keras` path). Defaults to `".tmp"`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory
    )
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        f.write(data)


def write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically."""
    write_bytes(path, text.encode(encoding))


def write_json(path, value, **kwargs):
    """Writes `value` as JSON to `path` atomically; `kwargs` go to
    `json.dumps` (e.g. `indent=2`)."""
    write_text(path, json.dumps(value, **kwargs) + "\n")


def check_writable(path, what="the output"):
    """Raises a clear error unless the file `path` can be written.

    Run it before any long work, so that a run does not fail at its first
    save. Creates the missing folders of `path`, and writes and removes a
    probe file in its folder.

    Args:
        path: str or path-like. A file to be written (need not exist).
        what: str. How the user named it, for the message (`"--checkpoint"`).

    Raises:
        ValueError: when `path` is a folder, a parent of it is a file, or its
            folder cannot be created or written.
    """
    path = os.path.abspath(os.fspath(path))
    advice = "Pass a path in a writable folder."
    if os.path.isdir(path):
        raise ValueError(f"{what}={path} is a folder. Pass a file path.")
    directory = existing = os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"{what}={path}: cannot write there, as {existing} is a file, "
            f"not a folder. {advice}"
        )
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(
            prefix=".", suffix=".probe", dir=directory
        )
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ValueError(
            f"{what}={path}: cannot write in {directory} ({reason}). {advice}"
        ) from None


def _mode_for(path):
    """The mode of the existing `path`, else that of a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # Elsewhere: set, and restore at once.
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    # Makes the rename itself durable (POSIX); not possible on Windows.
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
