"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed
over it (rename is atomic on POSIX and Windows). A reader, or a crash at any moment, sees the old
file or the new one, never half of one.

    write_text_atomic(path, text); write_json_atomic(path, value); write_bytes_atomic(path, data)
    with atomic_path(path) as temporary: numpy.savez(temporary, ...)   # any writer that takes a path
"""

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, durable=False):
    """A temporary path to write to; renamed onto `path` when the block ends without error.

    The temporary name keeps the suffix (numpy and matplotlib choose formats by it) and starts
    with a dot (image-folder readers skip it). `durable` fsyncs the file and its folder, for
    what a user was told is saved."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        if durable and hasattr(os, "O_DIRECTORY"):
            folder = os.open(path.parent, os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path, data, durable=False):
    with atomic_path(path, durable) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text, durable=False):
    return write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(path, value, durable=False):
    """JSON, indented, with numpy numbers and arrays as plain numbers and lists."""
    return write_text_atomic(path, json.dumps(value, indent=2, default=json_default) + "\n", durable)


def json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
