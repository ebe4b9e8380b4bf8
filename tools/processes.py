"""Independent jobs on several cores: forked workers where that is safe, else the same work in
this process, one job at a time. Either way each job runs single-threaded, so the results are
the same bytes for any number of workers."""

import multiprocessing
import os
import signal
import sys
import threading


def can_fork():
    """fork is safe only on Linux and from a process with one thread: a thread that holds a lock
    at the fork (a BLAS pool, a pickling helper) would hold it forever in the child."""
    tasks = "/proc/self/task"
    return (sys.platform == "linux" and hasattr(os, "fork")
            and threading.active_count() == 1 and os.path.isdir(tasks)
            and len(os.listdir(tasks)) == 1)


def fork_map(fn, items, workers):
    """[fn(item) for item in items], in `workers` forked processes where can_fork(), else here.
    fn may be a closure (the children inherit it); items and results must be plain numbers and
    arrays. Each item is computed by one single-threaded process either way, so the results are
    the same bytes for any number of workers."""
    items = list(items)
    if workers <= 1 or len(items) <= 1 or not can_fork():
        return [fn(item) for item in items]
    global _JOB
    _JOB = fn
    try:
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(items)), _quiet_child)
        with pool:
            return pool.map(_run_job, items, chunksize=1)
    finally:
        _JOB = None


def _run_job(item):  # in a forked child: _JOB is fork_map's fn, inherited from the parent
    try:
        return _JOB(item)
    except StopIteration as e:  # Pool.map would take it for the end of its results and lose it
        raise RuntimeError(f"StopIteration in a worker: {e!r}") from e


def _quiet_child():
    """Ctrl-C reaches the whole process group: the parent alone answers it, and stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
