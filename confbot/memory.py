"""Give freed heap memory back to the operating system while a call runs.

A call allocates and frees thousands of short-lived buffers a second on the event loop's
thread: RTP packets, decoded frames, feed messages. glibc's allocator keeps what they free
inside its heap, so a fragmented heap's free pages stay resident and RSS creeps up for many
minutes before it settles, although nothing leaks. `malloc_trim(0)` hands every whole free
page back (it advises the kernel page by page, not only at the top of the heap).
`MemoryReleaser` calls it every `interval_s` on a worker thread; on a C library without it
(musl, macOS) it does nothing. `close` stops it between runs: a trim already on its thread
finishes and is counted, so the stats always match the calls made.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def glibc_malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has no such function."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


@dataclass
class ReleaseStats:
    runs: int = 0
    released: int = 0  # runs after which the allocator said it gave memory back
    last_ms: float = 0.0


class MemoryReleaser:
    """Calls `trim` every `interval_s` seconds off the event loop, until `close`."""

    def __init__(self, interval_s: float, *, trim: Callable[[], int] | None = None) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must not be negative, got {interval_s}")
        self.interval_s = interval_s
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self.stats = ReleaseStats()

    @property
    def active(self) -> bool:
        return self.interval_s > 0 and self._trim is not None

    def start(self) -> None:
        if self.active and self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stop), name="memory-release")

    async def release_now(self) -> None:
        if self._trim is None:
            return
        started = time.perf_counter()
        gave_back = await asyncio.to_thread(self._trim)
        self.stats.runs += 1
        self.stats.released += 1 if gave_back else 0
        self.stats.last_ms = round((time.perf_counter() - started) * 1000, 2)

    async def _run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
                return  # close() asked, between two runs
            except TimeoutError:
                pass
            try:
                await self.release_now()
            except Exception:  # never let housekeeping take the server down
                log.exception("releasing free memory failed; not trying again")
                return

    async def close(self) -> None:
        # Cancelling the task mid-trim would leave the worker thread's call running but
        # uncounted; asking it to stop lets a trim in flight (a few ms) finish first.
        if self._task is not None and self._stop is not None:
            self._stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
