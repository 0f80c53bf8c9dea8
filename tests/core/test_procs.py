"""core.procs.stop_pool: an aborted pool is fully stopped when it returns (workers and the pool's
manager thread), so nothing of it is left for the interpreter's exit to trip over."""

from __future__ import annotations

import time

from chamlab.core.procs import process_pool, stop_pool


def test_abort_ends_the_workers_and_the_manager_thread() -> None:
    pool = process_pool(2)
    futures = [pool.submit(time.sleep, 60) for _ in range(4)]
    workers = list(pool._processes.values())
    manager = pool._executor_manager_thread
    assert workers and manager is not None
    stop_pool(pool, abort=True)
    assert not any(w.is_alive() for w in workers)
    assert not manager.is_alive()  # it closed the queues and its wake-up pipe before we returned
    assert all(f.done() for f in futures)
