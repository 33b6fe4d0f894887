"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or kill mid-write leaves either the old file or the new one, never half of one;
the data is fsynced before the rename (and the folder after it), so a power cut does
not leave an empty file either. A killed writer's temporary file
(``.tmp-PID-NAME-*``) is removed by the next write of the same target once its process
is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Removes the temporary files that dead writers of ``path`` left beside it."""
    directory, name = os.path.split(os.path.abspath(path))
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f".tmp-*-{glob.escape(name)}-*")):
        pid = os.path.basename(tmp).split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(tmp)
                removed.append(tmp)
    return removed


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path; on success it replaces ``path`` (mode 0644).

    Usage::

        with atomic_path("out.png") as tmp:
            figure.savefig(tmp)

    A folder that cannot be written raises OSError naming ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # keep the extension: some writers dispatch on it
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-{os.path.basename(path)}-",
                                   suffix=suffix, dir=directory)
        os.close(fd)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _fsync(tmp)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):   # not every file system syncs folders
            _fsync(directory, directory=True)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def check_writable_dir(directory: str, what: str = "output folder") -> None:
    """Creates ``directory`` if needed and proves a file can be written there, before any
    long work; raises OSError naming the folder otherwise."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-write-check-"):
            pass
    except OSError as e:
        raise OSError(f"cannot write to the {what} {directory}: {e.strerror or e}") from None


def model_file_kind(path: str) -> str:
    """What a model path holds, from its first bytes (not its name): ``"tflite"``,
    ``"keras"`` (a .keras zip), ``"h5"`` (HDF5 weights), ``"folder"``, ``"missing"`` or
    ``"unknown"``; lets loaders say "convert it" instead of a format parser's riddle."""
    if os.path.isdir(path):
        return "folder"
    if not os.path.isfile(path):
        return "missing"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(b"PK\x03\x04"):
        return "keras"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    return "unknown"


def check_model_file(path: str, expected: str) -> None:
    """Raises FileNotFoundError / ValueError naming ``path`` unless it holds ``expected``
    (``"tflite"`` or ``"keras"``; ``"keras"`` accepts .keras and .weights.h5 files)."""
    kind = model_file_kind(path)
    if kind == "missing":
        raise FileNotFoundError(f"model file not found: {path}")
    if kind == "folder":
        raise ValueError(f"{path}: is a folder, not a model file (give the .tflite / .keras "
                         f"file inside it)")
    if expected == "tflite" and kind in ("keras", "h5"):
        raise ValueError(f"{path}: is a Keras model, not a .tflite: convert it with "
                         f"tools/convert.py")
    if expected == "keras" and kind == "tflite":
        raise ValueError(f"{path}: is a TFLite model, not a Keras file (rename it .tflite; "
                         f"tools/evaluate.py and fld.runtime read it)")
