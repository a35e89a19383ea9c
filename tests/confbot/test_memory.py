"""MemoryReleaser: the periodic malloc_trim that keeps a long call's RSS flat."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from confbot.config import load_settings
from confbot.errors import ConfigError
from confbot.memory import MemoryReleaser, glibc_malloc_trim


def _counting_trim(results: list[int]) -> tuple[list[int], Callable[[], int]]:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return results[min(len(calls) - 1, len(results) - 1)]

    return calls, trim


def test_runs_every_interval_off_the_loop_and_counts() -> None:
    calls, trim = _counting_trim([1, 0, 1])

    async def scenario() -> MemoryReleaser:
        releaser = MemoryReleaser(0.02, trim=trim)
        releaser.start()
        await asyncio.sleep(0.2)
        await releaser.close()
        return releaser

    releaser = asyncio.run(scenario())
    ran = len(calls)
    assert releaser.stats.runs == ran >= 3
    asyncio.run(asyncio.sleep(0.05))
    assert len(calls) == ran  # nothing runs after close
    assert 1 <= releaser.stats.released < releaser.stats.runs


def test_close_during_a_trim_waits_for_it_and_counts_it() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_trim() -> int:
        entered.set()
        release.wait(5)
        return 1

    async def scenario() -> MemoryReleaser:
        releaser = MemoryReleaser(0.01, trim=slow_trim)
        releaser.start()
        assert await asyncio.to_thread(entered.wait, 5)
        closing = asyncio.create_task(releaser.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # the trim on its thread is still running
        release.set()
        await asyncio.wait_for(closing, 5)
        return releaser

    releaser = asyncio.run(scenario())
    assert (releaser.stats.runs, releaser.stats.released) == (1, 1)


def test_zero_interval_never_starts() -> None:
    calls, trim = _counting_trim([1])

    async def scenario() -> MemoryReleaser:
        releaser = MemoryReleaser(0, trim=trim)
        releaser.start()
        await asyncio.sleep(0.05)
        await releaser.close()
        return releaser

    releaser = asyncio.run(scenario())
    assert not releaser.active and calls == [] and releaser.stats.runs == 0


def test_negative_interval_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        MemoryReleaser(-1)


def test_a_failing_trim_is_logged_and_stops_without_taking_the_loop_down(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise OSError("no such symbol")

    async def scenario() -> MemoryReleaser:
        releaser = MemoryReleaser(0.01, trim=broken)
        releaser.start()
        await asyncio.sleep(0.1)
        assert releaser._task is not None and releaser._task.done()
        await releaser.close()
        return releaser

    with caplog.at_level(logging.ERROR, logger="confbot.memory"):
        releaser = asyncio.run(scenario())
    assert releaser.stats.runs == 0
    assert "releasing free memory failed" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_glibc_trim_is_found_and_callable_here() -> None:
    trim = glibc_malloc_trim()
    if trim is None:
        pytest.skip("this Linux's C library has no malloc_trim (not glibc)")
    blocks = [bytearray(64 * 1024) for _ in range(200)]
    del blocks[::2]
    assert trim() in (0, 1)


def test_setting_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nmemory_release_s = -5\n")
    with pytest.raises(ConfigError, match="memory_release_s must be >= 0"):
        load_settings(config, env={})
    config.write_text('[server]\nmemory_release_s = "often"\n')
    with pytest.raises(ConfigError, match="memory_release_s"):
        load_settings(config, env={})
    config.write_text("[server]\nmemory_release_s = 0\n")
    assert load_settings(config, env={}).server.memory_release_s == 0.0
    assert load_settings(None, env={}).server.memory_release_s == 30.0
