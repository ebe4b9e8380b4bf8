"""The files of a run: written into a staging folder and moved in together once complete, so
that a reader sees the previous set of files or the new one, never a mix or half of a file;
and a single file written whole (to a temporary name, then renamed), for what is written
outside a run's staging folder (the bundle)."""

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading

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


def write_text(path, text):  # into the staging folder: no one reads it before move_in
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"


def nulled(obj, path="", undefined=None):
    """(obj with every NaN or infinity as None, the paths "a.b.0" of those): JSON has no NaN,
    and a number a setting leaves undefined is shown as absent, never as a number."""
    undefined = [] if undefined is None else undefined
    if isinstance(obj, dict):
        return {k: nulled(v, f"{path}.{k}", undefined)[0] for k, v in obj.items()}, undefined
    if isinstance(obj, (list, tuple)):
        return [nulled(v, f"{path}.{i}", undefined)[0] for i, v in enumerate(obj)], undefined
    if isinstance(obj, float) and not math.isfinite(obj):
        undefined.append(path[1:])
        return None, undefined
    return obj, undefined


# ---- a run's outputs replace the previous ones whole, or not at all --------------------------
# Everything is written into a staging folder inside --out, and moved in only once complete; a
# lock held by the operating system (released when the process ends, however it ends) keeps a
# second run out of a folder that a run is writing.

LOCK = ".VI.lock"  # removed at the end; on Windows, where an open file cannot be, it stays


def lock(out):
    """The open lock file of out, held exclusively; OSError (one line) if another run holds it.
    A lock taken on a file that its holder has just removed is dropped and taken again."""
    path = os.path.join(out, LOCK)
    while True:
        f = open(path, "a+b")
        try:
            if os.name == "nt":
                import msvcrt
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise OSError(f"another run is writing {out} (it holds {path}); wait for it to end "
                          "or choose another --out") from None
        if os.path.exists(path) and os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
            return f
        f.close()


def unlock(f):
    """Remove the lock file, then release it (in this order, so lock() sees what it took)."""
    try:
        os.unlink(f.name)
    except OSError:
        pass
    f.close()


def staging_folder(out, names):
    """A new hidden folder in out to write the run into (called with out's lock held), after
    removing any that a killed run left, and checking that every file of
    names can later replace what out holds (nothing there, or a file) and that the longest
    name can be created in the staging folder."""
    for name in names:
        target = os.path.join(out, name)
        if os.path.lexists(target) and not os.path.isfile(target):
            raise OSError(f"{target} exists and is not a file; move it away first")
    for stale in os.listdir(out):  # left by a killed run; the lock says none is running
        if stale.startswith(".staging-"):
            shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
    staging = tempfile.mkdtemp(dir=out, prefix=".staging-")
    try:
        open(os.path.join(staging, max(names, key=len)), "wb").close()
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def move_in(staging, out, names):
    """Move every file of names from staging into out, all or none: each previous file is set
    aside first and put back if any move fails; SIGINT and SIGTERM wait until the end."""
    missing = [n for n in names if not os.path.isfile(os.path.join(staging, n))]
    if missing:
        raise RuntimeError(f"the run did not write {', '.join(missing)}")
    aside = tempfile.mkdtemp(dir=out, prefix=".previous-")
    done = []
    try:
        with signals_deferred():
            try:
                for name in names:
                    target, old = os.path.join(out, name), os.path.join(aside, name)
                    had = os.path.exists(target)
                    if had:
                        os.replace(target, old)
                    done.append((target, old, had))
                    os.replace(os.path.join(staging, name), target)
            except BaseException:
                for target, old, had in reversed(done):
                    if had:
                        os.replace(old, target)
                    elif os.path.exists(target):
                        os.unlink(target)
                raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def in_main_thread():
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM that arrive in the block take effect (as KeyboardInterrupt) at its end."""
    if not in_main_thread():
        yield
        return
    caught = []
    names = [s for s in ("SIGINT", "SIGTERM") if hasattr(signal, s)]
    before = {s: signal.signal(getattr(signal, s), lambda n, f: caught.append(n)) for s in names}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(getattr(signal, s), handler)
    if caught:
        raise KeyboardInterrupt


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM ends the block as Ctrl-C (SIGINT) does: by KeyboardInterrupt, so one handler
    stops the workers and removes the staging folder."""
    if not (in_main_thread() and hasattr(signal, "SIGTERM")):
        yield
        return
    before = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
