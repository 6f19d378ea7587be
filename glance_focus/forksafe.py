"""Locks that a forked child can use.

Hugging Face ZeroGPU runs the GPU function in a process forked from the server. A
``threading.Lock`` that another thread of the server held at that moment stays held forever in
the child (the thread that would release it does not exist there), so the first ``with lock``
in the child would hang. :class:`ForkSafeLock` behaves like ``threading.Lock``, and a forked
child gets a fresh, unheld one in its place (``os.register_at_fork``, as :mod:`logging` does
for its own locks): no lock created before a fork is ever used after it.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any


class ForkSafeLock:
    """A ``threading.Lock`` (or ``RLock`` with ``reentrant=True``) that is replaced by a new one in
    a forked child; use it as a context manager or with :meth:`acquire` / :meth:`release`."""

    def __init__(self, reentrant: bool = False) -> None:
        self._factory = threading.RLock if reentrant else threading.Lock
        self._lock = self._factory()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _renew(ref))

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self._lock.release()


def _renew(ref: weakref.ref[ForkSafeLock]) -> None:
    lock = ref()
    if lock is not None:
        lock._lock = lock._factory()
