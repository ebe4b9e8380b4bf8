"""The files of a run: each written whole (to a temporary name, then renamed), so that a reader
sees the old file or the new one, never half of one."""

import json
import os
import tempfile

import numpy as np


def atomic_write(path, write):
    """Call write(tmp_path), then rename over path: readers see the old file or the new one."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.",
                               suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's private 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    atomic_write(path, write)


def write_npz(path, arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"
