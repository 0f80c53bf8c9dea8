"""Worker processes and clusters that end with the run that started them.

One home for what the export pool (``chamlab.operators.export``) and the training oracle
(``chamlab.chamnet.training.oracle``) both need:

* :func:`process_pool`: a ``spawn`` process pool whose workers ignore Ctrl-C from birth (the parent
  handles it and kills them) and watch their parent: when it is gone, SIGKILL included, they exit within
  :data:`WATCH_SECONDS`. A worker otherwise waits for work forever, since it holds the write end of its
  own task queue; and multiprocessing's ``resource_tracker`` lives as long as any worker holds its pipe,
  so it ends with them.
* :func:`stop_pool`: shut a pool down, waiting for the work in flight or (``abort``) killing the workers
  at once; either way the pool's semaphores are released before the process exits (a Ctrl-C exit
  otherwise ends with the tracker's "leaked semaphore objects" warning); a worker's own locks are thread
  locks where a library would take a named semaphore (tqdm's), since a killed worker cannot unlink one.
* :func:`start_ray`: connect to a Ray cluster, or start a private one-node cluster.

The parent watch is a thread polling ``os.getppid()``, not Linux's ``PR_SET_PDEATHSIG``: that signal
fires when the *thread* that forked the worker ends, and a pool may grow from a short-lived thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chamlab.core.errors import InputError

WATCH_SECONDS = 0.25  # how often a worker checks that its parent still lives


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)  # the parent is gone: nobody wants this worker's answers


def _start_worker(parent: int, initializer: Callable[..., object] | None, initargs: Sequence[Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it kills us)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked from birth, see _Pool.submit
    if os.getppid() != parent:  # the parent died while this worker started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="chamlab-parent-watch", daemon=True).start()
    _thread_lock_for_tqdm()
    if initializer is not None:
        initializer(*initargs)


def _thread_lock_for_tqdm() -> None:
    """tqdm (whose bars torch.fx draws while exporting) takes a multiprocessing lock on first use: a named
    semaphore registered with the resource tracker, which a worker killed on Ctrl-C never unlinks, so the
    tracker ends the run with "leaked semaphore objects". A worker's bars only need a lock between its own
    threads."""
    if importlib.util.find_spec("tqdm") is None:
        return
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


class _Pool(cf.ProcessPoolExecutor):
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        # Workers are spawned here, on demand. A spawned child inherits the signal mask: with Ctrl-C
        # blocked it cannot die of a KeyboardInterrupt (and print its traceback) while it imports,
        # before _start_worker ignores the signal; a Ctrl-C meanwhile stays pending for this process.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def process_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: Sequence[Any] = ()
) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (fork would copy torch's thread pools) that end with this
    process; ``initializer(*initargs)`` runs in each after the parent watch starts (it must be a
    module-level function, as for any spawned pool)."""
    return _Pool(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, tuple(initargs)),
    )


def stop_pool(pool: cf.ProcessPoolExecutor, *, abort: bool = False) -> None:
    """Shut ``pool`` down: wait for the work in flight, or (``abort``: Ctrl-C, an error) cancel the
    queued work and kill the workers at once (``shutdown(cancel_futures=True)`` alone still waits for
    the items in flight, each seconds long). Returns once every worker has ended and the pool's queues,
    and so their semaphores, are closed."""
    if not abort:
        pool.shutdown(wait=True)
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    thread = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it: take it first
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join(timeout=5)
    # The pool's manager thread sees the dead workers, marks the pool broken and closes its queues and
    # its wake-up pipe. Waiting for it here, not at interpreter exit, lets the queues' semaphores be
    # unlinked, and keeps concurrent.futures' exit hook from writing to that pipe while the thread
    # closes it (an "OSError: Bad file descriptor" traceback on Python 3.11).
    if thread is not None:
        thread.join(timeout=60)


def start_ray(address: str | None, **local: Any) -> bool:
    """Connect to the Ray cluster at ``address``, or (None) start a private one-node cluster on this
    host with ``local`` as its ``ray.init`` arguments (``num_cpus``, ``resources``), even if
    ``$RAY_ADDRESS`` is set; no dashboard, no usage statistics, workers' logs stay in Ray's log folder.
    Returns whether this call did it (False: Ray was already initialised in this process); the caller
    that gets True shuts it down (``ray.shutdown()``). Ray missing is an :class:`InputError`."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "--executor ray needs Ray, which is not installed", hint="pip install 'chamlab[ray]'"
        ) from None
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", **local, **kwargs)
    return True
